"Tests of `herbarium_fastai.synth`: layout invariants, determinism, flat-style separability."
import csv, json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from herbarium_fastai.sheets import sheet_image
from herbarium_fastai.synth import make_synthetic_dataset, make_taxonomy, kaggle_train_file_name, kaggle_test_file_name


def _read_csv(path):
    with open(path, newline='') as f: return list(csv.reader(f))


def _all_bytes(root):
    "Map of every file under `root` (relative path) to its bytes"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def sheets(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'data'
    summary = make_synthetic_dataset(root, species=8, seed=3, size=64, workers=0, test_per_species=3,
                                     test_id_start=1990)
    return root, summary


def test_train_layout(sheets):
    root, summary = sheets
    meta = json.loads((root / 'train' / 'metadata.json').read_text())
    assert list(meta) == ['annotations', 'categories', 'images', 'info', 'institutions', 'licenses']
    images = {im['id']: im for im in meta['images']}
    anns = meta['annotations']
    assert len(images) == len(anns) == summary['train_images']
    assert {a['image_id'] for a in anns} == set(images)
    assert len({a['id'] for a in anns}) == len(anns)
    assert all(a['id'] != a['image_id'] for a in anns)
    cat_ids = [c['id'] for c in meta['categories']]
    assert cat_ids == sorted(set(cat_ids)) and cat_ids != list(range(len(cat_ids)))
    assert all(0 <= c < 64500 for c in cat_ids)
    assert all(c['order'].endswith('ales') and c['family'].endswith('aceae') and len(c['name'].split()) == 2
               for c in meta['categories'])
    counts = {c: 0 for c in cat_ids}
    for a in anns:
        im = images[a['image_id']]
        assert im['file_name'] == kaggle_train_file_name(a['category_id'], a['image_id'])
        assert im['file_name'].startswith(f"images/{a['category_id'] // 100:03d}/{a['category_id'] % 100:02d}/")
        assert Image.open(root / 'train' / im['file_name']).size == (im['width'], im['height']) == (43, 64)
        counts[a['category_id']] += 1
    assert min(counts.values()) >= 3 and max(counts.values()) > 3  # long tail
    assert {a['institution_id'] for a in anns} <= {i['id'] for i in meta['institutions']}
    assert {im['license'] for im in meta['images']} <= {l['id'] for l in meta['licenses']}
    # nothing on disk that the metadata does not name, and no temp files
    on_disk = {str(p.relative_to(root / 'train')) for p in (root / 'train').rglob('*') if p.is_file()}
    assert on_disk == {im['file_name'] for im in images.values()} | {'metadata.json'}


def test_test_layout_and_csvs(sheets):
    root, summary = sheets
    meta = json.loads((root / 'test' / 'metadata.json').read_text())
    assert list(meta) == ['images', 'info', 'licenses']
    ids = [im['id'] for im in meta['images']]
    assert sorted(ids) == list(range(1990, 1990 + 24)) and summary['test_images'] == 24
    for im in meta['images']:
        assert im['file_name'] == kaggle_test_file_name(im['id']) == f"images/{im['id'] // 1000:03d}/{im['id']}.jpg"
        assert (root / 'test' / im['file_name']).is_file()
    assert {p.name for p in (root / 'test' / 'images').iterdir()} == {'001', '002'}
    sub = _read_csv(root / 'sample_submission.csv')
    assert sub[0] == ['Id', 'Predicted'] and [int(r[0]) for r in sub[1:]] == ids and {r[1] for r in sub[1:]} == {'0'}
    labels = _read_csv(root / 'test_labels.csv')
    assert labels[0] == ['Id', 'category_id'] and [int(r[0]) for r in labels[1:]] == ids
    assert sorted(int(r[1]) for r in labels[1:]) == sorted(summary['category_ids'] * 3)


def test_deterministic_across_runs_and_workers(tmp_path):
    kw = dict(species=5, seed=7, size=48, test_per_species=2)
    a = make_synthetic_dataset(tmp_path / 'a', workers=0, **kw)
    make_synthetic_dataset(tmp_path / 'b', workers=2, chunk=4, **kw)
    files = _all_bytes(tmp_path / 'a')
    assert len(files) == a['train_images'] + a['test_images'] + 4
    assert files == _all_bytes(tmp_path / 'b')
    c = make_synthetic_dataset(tmp_path / 'c', workers=0, **{**kw, 'seed': 8})
    assert c['category_ids'] != a['category_ids']
    assert (tmp_path / 'c' / 'train' / 'metadata.json').read_bytes() != files['train/metadata.json']


def test_overwrite(tmp_path):
    make_synthetic_dataset(tmp_path, species=3, size=32, workers=0, style='flat')
    with pytest.raises(FileExistsError): make_synthetic_dataset(tmp_path, species=3, size=32, workers=0)
    s = make_synthetic_dataset(tmp_path, species=4, size=32, workers=0, style='flat', overwrite=True)
    meta = json.loads((tmp_path / 'train' / 'metadata.json').read_text())
    assert len(meta['categories']) == 4
    assert len(list((tmp_path / 'train' / 'images').rglob('*.jpg'))) == s['train_images']


def test_flat_style_separable(tmp_path):
    make_synthetic_dataset(tmp_path, species=10, seed=1, size=32, style='flat', workers=0)
    meta = json.loads((tmp_path / 'train' / 'metadata.json').read_text())
    files = {im['id']: im['file_name'] for im in meta['images']}
    means = {}
    for a in meta['annotations']:
        img = np.asarray(Image.open(tmp_path / 'train' / files[a['image_id']]), dtype=float)
        means.setdefault(a['category_id'], []).append(img.mean((0, 1)))
    centres = {c: np.mean(m, 0) for c, m in means.items()}
    for c, m in means.items(): assert np.abs(np.array(m) - centres[c]).max() < 3  # one colour per species
    cs = np.array(list(centres.values()))
    dist = np.linalg.norm(cs[:, None] - cs[None], axis=-1) + np.eye(len(cs)) * 1e9
    assert dist.min() > 20  # species differ clearly
    # test images carry their species' colour
    labels = {int(i): int(c) for i, c in _read_csv(tmp_path / 'test_labels.csv')[1:]}
    for im in json.loads((tmp_path / 'test' / 'metadata.json').read_text())['images']:
        m = np.asarray(Image.open(tmp_path / 'test' / im['file_name']), dtype=float).mean((0, 1))
        assert np.abs(m - centres[labels[im['id']]]).max() < 3


def test_taxonomy_inheritance():
    taxa = make_taxonomy(40, seed=2)
    fams = {}
    for c in taxa:
        t = c['traits']
        fams.setdefault(c['family'], set()).add((t['leaf_shape'], t['arrangement'], t['inflorescence'], t['venation'], c['order']))
    assert all(len(v) == 1 for v in fams.values()) and len(fams) > 3
    assert len({c['order'] for c in taxa}) > 1


def test_sheet_species_differ_more_than_jitter():
    "Two sheets of one species are closer (on average) than sheets of different species of the dataset"
    taxa = make_taxonomy(6, seed=0)
    small = lambda t, r: np.asarray(sheet_image(t, rng=r, size=48), dtype=float)
    imgs = [[small(c['traits'], [i, k]) for k in range(4)] for i, c in enumerate(taxa)]
    same = np.mean([np.abs(s[0] - s[k]).mean() for s in imgs for k in range(1, 4)])
    diff = np.mean([np.abs(imgs[i][0] - imgs[j][1]).mean() for i in range(6) for j in range(6) if i != j])
    assert same < diff


@pytest.mark.parametrize('size', [16, 32, 48, 100, 333])
def test_sheet_any_size(size):
    taxa = make_taxonomy(16, seed=5)
    for i, c in enumerate(taxa):
        img = sheet_image(c['traits'], rng=i, size=size, institution=i, supersample=1 + i % 3)
        assert img.size == (round(size * 2 / 3), size) and img.mode == 'RGB'
