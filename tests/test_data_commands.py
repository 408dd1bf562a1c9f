"herbarium-check, herbarium-resize, and herbarium-train's missing-image, subset and split handling, run as a user runs them"
import json, os, shutil, signal, subprocess, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import GOOD, assert_clean_failure, command_line, run_command
from herbarium_fastai.core import is_temporary
from herbarium_fastai.data import herbarium_dataloaders
from herbarium_fastai.metadata import image_paths, load_metadata

FAST_TRAIN = ('--no-pretrained', '--arch', 'test_resnet', '--size', 32, '--epochs', 1, '--bs', 16, '--lr-find-iters', 5)

@pytest.fixture
def holes(flat_dataset, tmp_path):
    "A copy of the flat dataset with two train images missing and one truncated"
    data = tmp_path/'holes'
    shutil.copytree(flat_dataset, data)
    paths = image_paths(load_metadata(data/'train', cache=False))
    for p in paths[:2]: os.unlink(p)
    Path(paths[2]).write_bytes(Path(paths[2]).read_bytes()[:50])
    return data, paths

@pytest.mark.parametrize('command', ['herbarium-check', 'herbarium-resize'])
def test_help(command):
    result = run_command(command, '--help')
    assert result.returncode == 0 and 'usage' in result.stdout

def test_check_lists_missing_and_unreadable(holes, tmp_path):
    data, paths = holes
    out = tmp_path/'problems.csv'
    result = run_command('herbarium-check', data, '--out', out)
    assert result.returncode == 1, result.stderr
    assert 'train: ' in result.stdout and '2 missing' in result.stdout and f'list: {out}' in result.stdout
    listed = pd.read_csv(out)
    assert list(listed.columns) == ['image_id', 'path', 'problem']
    assert sorted(listed.path) == sorted(paths[:2]) and set(listed.problem) == {'missing'}
    result = run_command('herbarium-check', data, '--decode-images', '--out', out, '--workers', 2)
    assert result.returncode == 1 and '1 unreadable' in result.stdout, result.stdout
    listed = pd.read_csv(out)
    assert len(listed) == 3 and listed.problem.str.startswith('unreadable').sum() == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]

def test_check_clean_dataset(flat_dataset, tmp_path):
    result = run_command('herbarium-check', flat_dataset, '--decode', '--out', tmp_path/'p.csv', '--workers', 0)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path/'p.csv')) == 0

def _dataset_with(tmp_path, **changes):
    meta = json.loads(json.dumps(GOOD)); meta.update(changes)
    (tmp_path/'data'/'train').mkdir(parents=True)
    (tmp_path/'data'/'train'/'metadata.json').write_text(json.dumps(meta))
    return tmp_path/'data'

@pytest.mark.parametrize('command', ['herbarium-check', 'herbarium-resize'])
def test_dotdot_file_name_refused_before_opening(command, tmp_path):
    data = _dataset_with(tmp_path, images=[dict(GOOD['images'][0], file_name='../../secret.jpg')])
    (tmp_path/'secret.jpg').write_bytes(b'not to be read')
    args = [tmp_path/'small'] if command == 'herbarium-resize' else ['--out', tmp_path/'p.csv']
    result = run_command(command, data, *args)
    assert_clean_failure(result, "'..'", 'metadata.json')
    assert not (tmp_path/'small').exists() and not (tmp_path/'p.csv').exists()

@pytest.mark.parametrize('command', ['herbarium-check', 'herbarium-resize'])
def test_missing_dataset_or_bad_metadata(command, tmp_path):
    args = [tmp_path/'small'] if command == 'herbarium-resize' else []
    assert_clean_failure(run_command(command, tmp_path/'nowhere', *args), 'nowhere')
    (tmp_path/'bad'/'train').mkdir(parents=True); (tmp_path/'bad'/'train'/'metadata.json').write_text('{"images": [')
    assert_clean_failure(run_command(command, tmp_path/'bad', *args), 'metadata.json')

def test_train_refuses_missing_images(holes, tmp_path):
    data, paths = holes
    run = tmp_path/'run'
    result = run_command('herbarium-train', data, '--out', run, *FAST_TRAIN, '--workers', 0)
    assert_clean_failure(result, '2 of', 'missing', str(run/'missing_images.csv'), '--skip-missing')
    assert len(pd.read_csv(run/'missing_images.csv')) == 2 and not (run/'model.pkl').exists()

def test_train_names_an_unreadable_image(holes, tmp_path):
    "--skip_missing drops the missing ones with a note; the truncated one stops training with its path, from a worker too"
    data, paths = holes
    result = run_command('herbarium-train', data, '--out', tmp_path/'run', *FAST_TRAIN, '--workers', 1, '--skip-missing')
    assert 'note: 2 missing train images left out' in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [l for l in result.stderr.strip().splitlines() if not l.startswith('note: ')]
    assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert f'{paths[2]}: cannot read the image' in lines[0]

def test_subset_run_predicts_chosen_species_only(flat_dataset, tmp_path):
    "Acceptance 5: --species 2 trains on 2 species and predicts only their Kaggle category ids"
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, *FAST_TRAIN, '--workers', 0, '--species', 2,
                         '--image-share', 0.5, '--min-per-species', 3)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run/'metrics.json').read_text())
    assert metrics['species'] == 2 and metrics['subset'] == dict(species=2, image_share=0.5, min_per_species=3)
    train = load_metadata(flat_dataset/'train')
    split = pd.read_csv(run/'split.csv').merge(train, on='image_id')
    chosen = set(split.category_id)
    assert len(chosen) == 2 and chosen < set(train.category_id)
    sub_file = tmp_path/'submission.csv'
    result = run_command('herbarium-predict', run/'model.pkl', flat_dataset, '--out', sub_file, '--bs', 16, '--workers', 0)
    assert result.returncode == 0, result.stderr[-3000:]
    sub = pd.read_csv(sub_file)
    assert len(sub) == len(load_metadata(flat_dataset/'test')) and set(sub.Predicted) <= chosen
    # the run's split is the one the same seed gives again
    again = tmp_path/'again.csv'
    herbarium_dataloaders(train[train.image_id.isin(split.image_id)], size=32, bs=16, num_workers=0, split_file=again, seed=42)
    assert pd.read_csv(again).sort_values('image_id').reset_index(drop=True).equals(
        pd.read_csv(run/'split.csv').sort_values('image_id').reset_index(drop=True))

def test_subset_bad_options(flat_dataset, tmp_path):
    assert_clean_failure(run_command('herbarium-train', flat_dataset, '--out', tmp_path/'r', '--no-pretrained',
                                     '--families', 'Nowhereaceae'), 'unknown families: Nowhereaceae')
    assert_clean_failure(run_command('herbarium-train', flat_dataset, '--out', tmp_path/'r', '--no-pretrained',
                                     '--species', 999), '999 species')

def test_split_file_same_seed_same_file(flat_dataset, tmp_path):
    train = load_metadata(flat_dataset/'train')
    for name, seed in [('a', 1), ('b', 1), ('c', 2)]:
        herbarium_dataloaders(train, size=32, bs=8, num_workers=0, seed=seed, split_file=tmp_path/f'{name}.csv')
    assert (tmp_path/'a.csv').read_bytes() == (tmp_path/'b.csv').read_bytes() != (tmp_path/'c.csv').read_bytes()

def _all_complete(dest):
    "Every .jpg under `dest` decodes fully; no temp file is there."
    files = [p for p in dest.rglob('*') if p.is_file()]
    assert not [p for p in files if is_temporary(p.name)]
    for p in files:
        if p.suffix == '.jpg':
            with Image.open(p) as im: im.load()
    return len([p for p in files if p.suffix == '.jpg'])

def test_resize_resumes_after_interruption(flat_dataset, tmp_path):
    data = tmp_path/'big'
    shutil.copytree(flat_dataset, data)
    meta = load_metadata(data/'train', cache=False)
    for p in image_paths(meta): Image.open(p).resize((400, 600)).save(p, quality=90)
    dest = tmp_path/'small'
    # an interrupted run, simulated: some finished images and a stray temp file
    first = image_paths(meta, dest/'train')[:3]
    for p in first: Path(p).parent.mkdir(parents=True, exist_ok=True); Image.new('RGB', (8, 12)).save(p)
    stray = Path(first[0]).with_name('.half.jpg.999-1.partial.jpg'); stray.write_bytes(b'half a jpeg')
    result = run_command('herbarium-resize', data, dest, '--size', 64, '--workers', 2)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index('{'):])
    n_test = len(load_metadata(data/'test', cache=False))
    assert summary['skipped'] == 3 and summary['written'] == len(meta) - 3 + n_test and summary['failed'] == 0
    assert not stray.exists() and Image.open(first[0]).size == (8, 12)  # finished files are kept, not redone
    assert _all_complete(dest) == len(meta) + n_test
    assert max(Image.open(image_paths(load_metadata(dest/'train'))[5]).size) == 64
    for name in ['train/metadata.json', 'test/metadata.json', 'test_labels.csv']:
        assert (dest/name).read_bytes() == (data/name).read_bytes()

def test_resize_killed_midway_leaves_no_partial_file(flat_dataset, tmp_path):
    "A real interruption: SIGKILL to the command and its workers part-way; what is there is whole; a rerun finishes"
    data = tmp_path/'big'
    shutil.copytree(flat_dataset, data)
    for split in ('train', 'test'):
        for p in image_paths(load_metadata(data/split, cache=False)): Image.open(p).resize((1000, 1500)).save(p, quality=95)
    dest = tmp_path/'small'
    proc = subprocess.Popen(command_line('herbarium-resize', data, dest, '--size', 64, '--workers', 1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(dest.rglob('*.jpg'))) < 3: time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    done = len([p for p in dest.rglob('*.jpg') if not is_temporary(p.name)])
    for p in dest.rglob('*.jpg'):
        if not is_temporary(p.name):
            with Image.open(p) as im: im.load()  # every finished name is a whole image
    result = run_command('herbarium-resize', data, dest, '--size', 64, '--workers', 2)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index('{'):])
    assert summary['skipped'] == done and summary['written'] > 0 and summary['failed'] == 0  # it was interrupted part-way
    assert _all_complete(dest) == summary['skipped'] + summary['written']
