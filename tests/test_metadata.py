"herbarium_fastai.metadata: bad input, unsafe file names, the Arrow cache, latin-1, the schema of every year"
import builtins, io, json, logging, os, subprocess, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import herbarium_fastai.metadata as md
import herbarium_fastai.metadata_cache as mc
import herbarium_fastai.metadata_worker as mw
from herbarium_fastai.core import HerbariumError, MetadataError
from herbarium_fastai.metadata import category_table, image_paths, load_metadata

COLUMNS = ['image_id', 'file_name', 'category_id', 'species', 'genus', 'family', 'order', 'institution_id']

def meta2021(n_images=6):
    "A small, valid Herbarium 2021 train/metadata.json as a dict (annotations in reverse order, ids != image ids)"
    images = [dict(file_name=f'images/000/{i % 2:02d}/{100 + i}.jpg', height=1000, id=100 + i, license=0, width=700)
              for i in range(n_images)]
    annotations = [dict(category_id=i % 2, id=500 + i, image_id=100 + i, institution_id=i % 3) for i in reversed(range(n_images))]
    categories = [dict(family='Orchidaceae', id=0, name='Aa calceata (Rchb.f.) Schltr.', order='Asparagales'),
                  dict(family='Rosaceae', id=1, name='Rosa canina L.', order='Rosales')]
    return dict(annotations=annotations, categories=categories, images=images, info=dict(year=2021, version='1'),
                institutions=[dict(id=i, name=n) for i, n in enumerate(['NY', 'BPBM', 'NL'])], licenses=[])

def write(path, obj, encoding='utf-8'):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(obj, ensure_ascii=False).encode(encoding))
    return path

@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    "Every test gets its own cache folder through $HERBARIUM_CACHE (nothing is written under ~/.cache)"
    monkeypatch.setenv('HERBARIUM_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'/'metadata'

def check_error(err, path, *words):
    "A MetadataError (a HerbariumError and a ValueError) with a one-line message that starts with the file"
    assert isinstance(err, MetadataError) and isinstance(err, HerbariumError) and isinstance(err, ValueError)
    msg = str(err)
    assert '\n' not in msg, msg
    assert msg.startswith(f'{path}: '), msg
    for w in words: assert w in msg, (w, msg)

# ---------------------------------------------------------------- bad input
def _mutate(**kw):
    def f(d):
        for path, value in kw.items():
            section, i, key = path.split('.')
            if value is None: del d[section][int(i)][key]
            else: d[section][int(i)][key] = value
        return d
    return f

BAD = {
    'not json': (b'this is not json', 'not valid JSON'),
    'truncated': (lambda: json.dumps(meta2021()).encode()[:-40], 'is the file truncated?'),
    'empty file': (b'', 'empty file'),
    'top-level scalar': (b'42', 'the top level must be a JSON object or array'),
    'missing annotations': (lambda: json.dumps({k: v for k, v in meta2021().items() if k != 'annotations'}).encode(),
                            "missing required key 'annotations'"),
    'missing images and categories': (lambda: json.dumps({k: v for k, v in meta2021().items() if k not in ('images', 'categories')}).encode(),
                                      "missing required keys 'images', 'categories'"),
    'images not a list': (lambda: json.dumps({**meta2021(), 'images': {'a': 1}}).encode(), "'images' must be a JSON array"),
    'missing file_name': (_mutate(**{'images.2.file_name': None, 'images.4.file_name': None}),
                          "required key 'file_name' is missing in 2 image records (first: images[2])"),
    'missing category_id': (_mutate(**{'annotations.1.category_id': None}),
                            "required key 'category_id' is missing in 1 annotation record (first: annotations[1])"),
    'missing institution_id': (_mutate(**{'annotations.3.institution_id': None}),
                               "required key 'institution_id' is missing in 1 annotation record (first: annotations[3])"),
    'missing order': (_mutate(**{'categories.1.order': None}), "required key 'order' is missing in 1 category record (first: categories[1])"),
    'string image id': (_mutate(**{'images.0.id': '100'}), "'id' is not an integer in 1 image record (first: images[0] = '100')"),
    'string annotation image_id': (_mutate(**{'annotations.0.image_id': '105'}),
                                   "'image_id' is not an integer in 1 annotation record (first: annotations[0] = '105')"),
    'duplicate image ids': (_mutate(**{'images.3.id': 101, 'images.5.id': 101}),
                            '2 duplicate image ids (first: image id 101 at images[1] and images[3])'),
    'unknown images': (_mutate(**{'annotations.0.image_id': 999, 'annotations.2.image_id': 998}),
                       '2 annotations point at unknown images (first: annotation id 505 -> image_id 999)'),
    'unknown categories': (_mutate(**{'annotations.4.category_id': 7}),
                           '1 annotation points at unknown categories (first: annotation id 501 -> category_id 7)'),
    'image without annotation': (lambda d: {**d, 'annotations': d['annotations'][1:]},
                                 '1 train image has no annotation (first: image id 105)'),
    'two annotations for an image': (lambda d: {**d, 'annotations': d['annotations'] + [dict(d['annotations'][0], id=900)]},
                                     '1 train image has more than one annotation (first: image id 105 has 2)'),
    'duplicate category ids': (lambda d: {**d, 'categories': d['categories'] + [dict(d['categories'][0])]},
                               '1 duplicate category id (first: category id 0'),
    'no categories': (lambda d: {**d, 'categories': []}, "'categories' is empty"),
    'no images': (lambda d: {**d, 'images': [], 'annotations': []}, "'images' is empty"),
    'empty file_name': (_mutate(**{'images.1.file_name': ''}), '1 image has an empty file_name (first: image id 101'),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_input(case, tmp_path, cache_dir):
    bad, words = BAD[case]
    path = tmp_path/'train'/'metadata.json'; path.parent.mkdir()
    raw = bad if isinstance(bad, bytes) else bad() if bad.__code__.co_argcount == 0 else json.dumps(bad(meta2021())).encode()
    path.write_bytes(raw)
    for cache in (False, True, True):  # a bad file is never cached: the same error every time
        with pytest.raises(MetadataError) as e: load_metadata(path.parent, cache=cache)
        check_error(e.value, path, words)
    assert not list(cache_dir.glob('*')) if cache_dir.exists() else True

def test_bad_paths(tmp_path):
    with pytest.raises(MetadataError) as e: load_metadata(tmp_path/'nowhere')
    check_error(e.value, tmp_path/'nowhere', 'no such file or folder')
    with pytest.raises(MetadataError) as e: load_metadata(tmp_path)
    check_error(e.value, tmp_path, 'no metadata here')
    write(tmp_path/'train'/'metadata.json', meta2021())
    with pytest.raises(MetadataError) as e: load_metadata(tmp_path/'train', split='test')
    check_error(e.value, tmp_path/'train'/'metadata.json', "split='test' asked for, but this is the train metadata")
    with pytest.raises(MetadataError) as e: load_metadata(tmp_path/'train', split='valid')
    check_error(e.value, tmp_path/'train', "split must be 'train' or 'test'")

# ---------------------------------------------------------------- unsafe file names: refused before any image is opened
@pytest.mark.parametrize('file_name,problem', [
    ('../../../etc/passwd', "'..' component"), ('images/../../outside.jpg', "'..' component"),
    ('images\\..\\..\\outside.jpg', "'..' component"), ('/etc/passwd', 'an absolute file_name'),
    ('\\\\server\\share\\x.jpg', 'an absolute file_name'), ('C:\\Windows\\x.jpg', 'drive letter')])
def test_unsafe_file_name(file_name, problem, tmp_path, monkeypatch):
    d = meta2021(); d['images'][3]['file_name'] = file_name
    path = write(tmp_path/'data'/'train'/'metadata.json', d)
    opened = []
    real_open, real_io_open = builtins.open, io.open
    def spy(f, *a, **kw): opened.append(os.fspath(f) if not isinstance(f, int) else f); return real_open(f, *a, **kw)
    def io_spy(f, *a, **kw): opened.append(os.fspath(f) if not isinstance(f, int) else f); return real_io_open(f, *a, **kw)
    monkeypatch.setattr(builtins, 'open', spy); monkeypatch.setattr(io, 'open', io_spy)
    with pytest.raises(MetadataError) as e: load_metadata(path.parent, cache=False)
    monkeypatch.undo()
    check_error(e.value, path, '1 image has', problem, f'image id 103 -> {file_name!r}')
    assert set(opened) == {str(path)}, opened                          # only the metadata file was opened
    assert not any((tmp_path/'data'/'train'/'images').rglob('*.jpg'))  # and no image exists at all

# ---------------------------------------------------------------- the cache
def test_cache_hit_miss_and_staleness(tmp_path, cache_dir, monkeypatch):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    parses = []
    real_parse = md._parse_file
    monkeypatch.setattr(md, '_parse_file', lambda *a: parses.append(a) or real_parse(*a))
    cold = load_metadata(path.parent)                       # miss: parsed, then cached
    assert len(parses) == 1 and len(list(cache_dir.glob('*.arrow'))) == 1
    hot = load_metadata(path.parent)                        # hit: not parsed again
    assert len(parses) == 1
    pd.testing.assert_frame_equal(cold, hot)
    assert cold.attrs == hot.attrs == dict(root=str(path.parent), year=2021, split='train', source=str(path))
    load_metadata(path.parent, cache=False)                 # bypass: parsed, cache untouched
    assert len(parses) == 2
    # same size, new content, new mtime: a fresh result
    d = meta2021(); d['categories'][1]['name'] = 'Rosa arvina L.'
    assert len(json.dumps(d)) == path.stat().st_size
    write(path, d); st = path.stat(); os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = load_metadata(path.parent)
    assert len(parses) == 3 and 'Rosa arvina L.' in set(fresh.species) and 'Rosa canina L.' not in set(fresh.species)
    assert len(list(cache_dir.glob('*.arrow'))) == 1      # the stale entry was replaced
    assert not list(cache_dir.glob('*.tmp'))                # written atomically: no temp file left
    # same content and size, new mtime only: also a miss (never stale), same result
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    pd.testing.assert_frame_equal(load_metadata(path.parent), fresh)
    assert len(parses) == 4

def test_cache_content_change_in_the_middle(tmp_path, cache_dir):
    "A change beyond the hashed first and last MiB is still seen through size or mtime"
    d = meta2021(40_000)
    path = write(tmp_path/'train'/'metadata.json', d)
    assert path.stat().st_size > 3 * 2**20
    first = load_metadata(path.parent)
    d['annotations'][len(d['annotations']) // 2]['category_id'] = 1 - d['annotations'][len(d['annotations']) // 2]['category_id']
    write(path, d)
    second = load_metadata(path.parent)
    assert (first.category_id != second.category_id).sum() == 1

def test_cache_env_and_explicit_folder(tmp_path, cache_dir):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    load_metadata(path.parent)
    assert len(list(cache_dir.glob('*.arrow'))) == 1      # under $HERBARIUM_CACHE/metadata
    load_metadata(path.parent, cache=tmp_path/'elsewhere')
    assert len(list((tmp_path/'elsewhere').glob('*.arrow'))) == 1

def test_unreadable_cache_is_ignored(tmp_path, cache_dir):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    good = load_metadata(path.parent)
    [entry] = cache_dir.glob('*.arrow')
    entry.write_bytes(b'garbage')
    with pytest.warns(UserWarning, match='ignoring unreadable metadata cache'): again = load_metadata(path.parent)
    pd.testing.assert_frame_equal(good, again)

def test_cached_frame_is_writable(tmp_path, cache_dir):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    load_metadata(path.parent)
    df = load_metadata(path.parent)
    df.loc[0, 'category_id'] = 1; df.loc[0, 'species'] = 'Rosa canina L.'
    assert df.loc[0, 'category_id'] == 1

# ---------------------------------------------------------------- the years
def test_schema_2021(tmp_path, cache_dir):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    for cache in (False, True, True):
        df = load_metadata(path.parent, cache=cache)
        assert list(df.columns) == COLUMNS
        assert df.image_id.tolist() == list(range(100, 106))                   # the images' order
        assert df.category_id.tolist() == [0, 1, 0, 1, 0, 1]                   # joined on annotation.image_id
        assert df.institution_id.tolist() == [0, 1, 2, 0, 1, 2]
        assert df.image_id.dtype == np.int64 and df.category_id.dtype == np.int64 and df.institution_id.dtype == np.int64
        assert str(df.file_name.dtype) == 'str' and df.file_name[0] == 'images/000/00/100.jpg'
        assert all(isinstance(df[c].dtype, pd.CategoricalDtype) for c in ['species', 'genus', 'family', 'order'])
        assert df.genus.tolist()[:2] == ['Aa', 'Rosa'] and df.order.tolist()[:2] == ['Asparagales', 'Rosales']  # genus: the name's first word
    t = category_table(df)
    assert t.category_id.tolist() == [0, 1] and t.species.tolist() == ['Aa calceata (Rchb.f.) Schltr.', 'Rosa canina L.']
    assert image_paths(df)[0] == str(path.parent/'images/000/00/100.jpg')

def test_latin1_2020(tmp_path, cache_dir):
    d = dict(annotations=[dict(category_id=3, id=1, image_id=7, region_id=0)],
             categories=[dict(family='Euphorbiaceae', genus='Acalypha', id=3, name='Acalypha arvensis Pöpp. & Endl.')],
             images=[dict(file_name='images/000/03/7.jpg', height=1000, id=7, license=0, width=680)],
             info=dict(year=2020), licenses=[], regions=[dict(id=0, name='NYBG')])
    path = write(tmp_path/'nybg2020'/'train'/'metadata.json', d, encoding='latin-1')
    with pytest.raises(UnicodeDecodeError): path.read_bytes().decode('utf-8')
    for cache in (False, True, True):
        df = load_metadata(path.parent, cache=cache)
        assert df.species.tolist() == ['Acalypha arvensis Pöpp. & Endl.'] and df.genus.tolist() == ['Acalypha']
        assert df.attrs['year'] == 2020 and df.institution_id.tolist() == [0] and list(df.columns) == COLUMNS
    test = write(tmp_path/'nybg2020'/'test'/'metadata.json', dict(images=[dict(file_name='images/0/9.jpg', id=9, license=0)],
                                                               info=dict(description='Herbarium 2020, données de test'), licenses=[]), 'latin-1')
    assert load_metadata(test.parent, cache=False).attrs['year'] == 2020  # not UTF-8: the 2020 file

def test_2022(tmp_path, cache_dir):
    d = dict(annotations=[dict(category_id=5, genus_id=1, image_id='00005__001', institution_id=2)],
             categories=[dict(authors='L.', category_id=5, family='Rosaceae', genus='Rosa', scientificName='Rosa canina L.', species='canina')],
             distances=[], genera=[dict(genus_id=1, genus='Rosa')],
             images=[dict(file_name='00005/00005__001.jpg', image_id='00005__001', license=0)],
             institutions=[dict(collectionCode='NY', institution_id=2)], licenses=[])
    write(tmp_path/'train_metadata.json', d)
    write(tmp_path/'test_metadata.json', [dict(file_name='000/test-000000.jpg', image_id=0)])
    for cache in (False, True, True):
        train = load_metadata(tmp_path, cache=cache)
        assert list(train.columns) == COLUMNS and train.image_id.tolist() == ['00005__001']
        assert train.file_name.tolist() == ['train_images/00005/00005__001.jpg'] and train.attrs['root'] == str(tmp_path)
        assert train.species.tolist() == ['Rosa canina L.'] and train.order.isna().all()
        test = load_metadata(tmp_path, split='test', cache=cache)
        assert list(test.columns) == ['image_id', 'file_name'] and test.image_id.tolist() == [0]
        assert test.file_name.tolist() == ['test_images/000/test-000000.jpg'] and test.attrs['split'] == 'test'
        assert image_paths(test) == [str(tmp_path/'test_images/000/test-000000.jpg')]
    # a bare list where train metadata is wanted
    with pytest.raises(MetadataError) as e: load_metadata(tmp_path/'test_metadata.json', split='train')
    check_error(e.value, tmp_path/'test_metadata.json', "split='train' asked for, but this is the test metadata")
    bare = write(tmp_path/'other.json', [dict(file_name='000/test-000000.jpg', image_id=0)])
    with pytest.raises(MetadataError) as e: load_metadata(bare, split='train')
    check_error(e.value, bare, 'a bare JSON list (the 2022 test format) where train metadata was expected')

# ---------------------------------------------------------------- two processes (metadata_worker)
class _Log(logging.Handler):
    "What herbarium_fastai.metadata logs at DEBUG while it is attached."
    def __init__(self): super().__init__(logging.DEBUG); self.messages = []
    def emit(self, record): self.messages.append(record.getMessage())

@pytest.fixture
def worker_log():
    log = logging.getLogger('herbarium_fastai.metadata')
    handler, level = _Log(), log.level
    log.addHandler(handler); log.setLevel(logging.DEBUG)
    yield handler.messages
    log.removeHandler(handler); log.setLevel(level)

def _used(messages): return any(m.startswith('images decoded by the metadata worker') for m in messages)

def _both(path, **kw):
    "The frames loaded in one process and with the worker, which must be equal."
    one = load_metadata(path, cache=False, parallel=False, **kw)
    two = load_metadata(path, cache=False, parallel=True, **kw)
    pd.testing.assert_frame_equal(one, two); assert one.attrs == two.attrs
    return two

def test_worker_in_chunks_gives_the_same_frame(tmp_path, worker_log, monkeypatch):
    monkeypatch.setattr(mw, '_WORKER_CHUNK', 300)  # a few records a chunk: many chunks
    d = meta2021(200); d['images'][7]['file_name'] = 'images/ünïcode/ß.jpg'
    path = write(tmp_path/'train'/'metadata.json', d)
    assert json.dumps(d['images']).count('file_name') == 200 and path.stat().st_size > 20 * 300
    df = _both(path.parent)
    assert _used(worker_log) and df.file_name[7] == 'images/ünïcode/ß.jpg'
    assert not list(Path(mw._scratch_folder(1) or tempfile.gettempdir()).glob('herbarium-images-*'))  # its file is gone

def test_worker_on_pretty_printed_test_metadata(tmp_path, worker_log):
    path = tmp_path/'test'/'metadata.json'; path.parent.mkdir()
    path.write_text(json.dumps(dict(images=[dict(file_name=f'images/{i}.jpg', id=i) for i in range(50)], info={}), indent=4))
    df = _both(path.parent)
    assert _used(worker_log) and df.image_id.tolist() == list(range(50))

@pytest.mark.parametrize('change,chunk,why', [
    (lambda d: d['images'][3].update(file_name='images/a}, {b.jpg'), 1, 'DecodeError'),  # a "boundary" inside a string
    (lambda d: d['images'][3].update(file_name='images/a]b.jpg'), 50, 'not a plain list of flat records'),
    (lambda d: d['images'].__setitem__(3, dict(bbox=[1, 2], **d['images'][3])), 50, 'not a plain list of flat records'),
    (lambda d: d['info'].update(images=[dict(file_name='x.jpg', id=1)]), 50, 'it read other bytes'),  # a decoy after the images
    (lambda d: d['images'][3].update(id='103'), 50, None),                                            # left to this process: its error
])
def test_worker_falls_back_to_this_process(change, chunk, why, tmp_path, worker_log, monkeypatch):
    monkeypatch.setattr(mw, '_WORKER_CHUNK', chunk)  # (about one record a chunk)
    d = meta2021(30); change(d)
    path = write(tmp_path/'train'/'metadata.json', d)
    if why is None:
        for parallel in (False, True):
            with pytest.raises(MetadataError) as e: load_metadata(path.parent, cache=False, parallel=parallel)
            check_error(e.value, path, "'id' is not an integer in 1 image record (first: images[3] = '103')")
        return
    _both(path.parent)
    assert not _used(worker_log) and any(why in m for m in worker_log), worker_log

def test_worker_that_cannot_start(tmp_path, worker_log, monkeypatch):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    monkeypatch.setattr(mw.sys, 'executable', str(tmp_path/'no-python'))
    _both(path.parent)
    assert any(m.startswith('could not start the metadata worker') for m in worker_log), worker_log
    monkeypatch.undo(); worker_log.clear()
    monkeypatch.setattr(mw, '_scratch_folder', lambda size: str(tmp_path/'no-such-folder'))  # nowhere to write its columns
    _both(path.parent)
    assert any(m.startswith('could not start the metadata worker') for m in worker_log), worker_log

def test_worker_string_ids_2022(tmp_path, worker_log):
    d = dict(annotations=[dict(category_id=5, genus_id=1, image_id=f'0000{i}__001', institution_id=2) for i in range(3)],
             categories=[dict(authors='L.', category_id=5, family='Rosaceae', genus='Rosa', scientificName='Rosa canina L.', species='canina')],
             distances=[], genera=[dict(genus_id=1, genus='Rosa')],
             images=[dict(file_name=f'0000{i}/0000{i}__001.jpg', image_id=f'0000{i}__001', license=0) for i in range(3)],
             institutions=[dict(collectionCode='NY', institution_id=2)], licenses=[])
    write(tmp_path/'train_metadata.json', d)
    assert _both(tmp_path).image_id.tolist() == ['00000__001', '00001__001', '00002__001'] and _used(worker_log)  # strings
    d['images'] = [dict(im, image_id=i) for i, im in enumerate(d['images'])]
    d['annotations'] = [dict(a, image_id=i) for i, a in enumerate(d['annotations'])]
    write(tmp_path/'train_metadata.json', d)
    worker_log.clear()
    assert _both(tmp_path).image_id.tolist() == [0, 1, 2] and _used(worker_log)  # integers
    d['images'][1]['image_id'] = d['annotations'][1]['image_id'] = '1'
    write(tmp_path/'train_metadata.json', d)
    worker_log.clear()
    assert _both(tmp_path).image_id.tolist() == ['0', '1', '2']  # both kinds: all strings, decoded here
    assert any("it has no 'image_id' column (missing, or integers and strings mixed)" in m for m in worker_log), worker_log

def test_worker_latin1_2020(tmp_path, worker_log):
    d = dict(annotations=[dict(category_id=3, id=1, image_id=7, region_id=0)],
             categories=[dict(family='Euphorbiaceae', genus='Acalypha', id=3, name='Acalypha arvensis Pöpp.')],
             images=[dict(file_name='images/000/03/7é.jpg', height=1000, id=7, license=0, width=680)],
             info=dict(year=2020), licenses=[], regions=[dict(id=0, name='NYBG')])
    path = write(tmp_path/'train'/'metadata.json', d, encoding='latin-1')
    assert _both(path.parent).file_name.tolist() == ['images/000/03/7é.jpg']  # not UTF-8: read again as latin-1, in one process

@pytest.mark.parametrize('case', [c for c in BAD if c not in ('not json', 'empty file', 'top-level scalar')])
def test_bad_input_with_worker(case, tmp_path):
    "Every bad file gives the same error with the worker as without."
    bad, words = BAD[case]
    path = tmp_path/'train'/'metadata.json'; path.parent.mkdir()
    path.write_bytes(bad() if not isinstance(bad, bytes) and bad.__code__.co_argcount == 0 else json.dumps(bad(meta2021())).encode())
    errors = []
    for parallel in (False, True):
        with pytest.raises(MetadataError) as e: load_metadata(path.parent, cache=False, parallel=parallel)
        check_error(e.value, path, words); errors.append(str(e.value))
    assert errors[0] == errors[1]

def test_worker_unsafe_file_name_opens_no_image(tmp_path, monkeypatch):
    d = meta2021(); d['images'][3]['file_name'] = '../../../etc/passwd'
    path = write(tmp_path/'data'/'train'/'metadata.json', d)
    opened, real_open = [], builtins.open
    monkeypatch.setattr(builtins, 'open', lambda f, *a, **kw: opened.append(os.fspath(f)) or real_open(f, *a, **kw))
    with pytest.raises(MetadataError) as e: load_metadata(path.parent, cache=False, parallel=True)
    monkeypatch.undo()
    check_error(e.value, path, "1 image has a file_name with a '..' component", "image id 103 -> '../../../etc/passwd'")
    assert all(f == str(path) or Path(f).name.startswith('herbarium-images-') for f in opened), opened  # no image

def test_worker_by_size_and_cpus(tmp_path, worker_log, monkeypatch):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    load_metadata(path.parent, cache=False)
    assert not worker_log                                   # a small file: one process
    monkeypatch.setattr(mw, '_WORKER_BYTES', 0)
    monkeypatch.setattr(mw, 'cpu_count', lambda: 2)
    load_metadata(path.parent, cache=False)
    assert _used(worker_log)                                # as large as _WORKER_BYTES, 2 CPUs: two processes
    worker_log.clear(); monkeypatch.setattr(mw, 'cpu_count', lambda: 1)
    load_metadata(path.parent, cache=False)
    assert not worker_log                                   # one CPU: one process

def test_worker_stopped_when_the_load_stops(tmp_path, monkeypatch):
    path = write(tmp_path/'train'/'metadata.json', meta2021())
    workers, real_init = [], mw.ImagesWorker.__init__
    def init(self, *a):
        real_init(self, *a); workers.append(self)
    monkeypatch.setattr(mw.ImagesWorker, '__init__', init)
    def interrupted(*a, **kw): raise KeyboardInterrupt
    monkeypatch.setattr(md, '_train_columns', interrupted)
    with pytest.raises(KeyboardInterrupt): load_metadata(path.parent, cache=False, parallel=True)
    [w] = workers
    assert w.proc.poll() is not None and not Path(w.out).exists()  # no process left, no file left

# ---------------------------------------------------------------- a large frame is cached by a background thread
@pytest.fixture
def slow_background_cache(tmp_path, cache_dir, monkeypatch):
    "Every frame counts as large, and writing a cache entry takes 0.5 s; the path of a small 2021 train file."
    monkeypatch.setattr(mc, '_BACKGROUND_ROWS', 1)
    real_write = mc._write_cache
    def slow_write(*a):
        time.sleep(0.5); real_write(*a)
    monkeypatch.setattr(mc, '_write_cache', slow_write)
    return write(tmp_path/'train'/'metadata.json', meta2021())

def test_background_cache_write(slow_background_cache, cache_dir, monkeypatch):
    path = slow_background_cache
    parses, real_parse = [], md._parse_file
    monkeypatch.setattr(md, '_parse_file', lambda *a: parses.append(a) or real_parse(*a))
    t0 = time.perf_counter()
    df = load_metadata(path.parent)
    assert time.perf_counter() - t0 < 0.4 and not list(cache_dir.glob('*.arrow'))  # the load did not wait for the write
    df.loc[0, 'category_id'] = 99                                                  # the caller changes its frame at once
    again = load_metadata(path.parent)                                             # waits for the write, then reads it
    assert len(parses) == 1 and len(list(cache_dir.glob('*.arrow'))) == 1
    assert again.category_id.tolist() == [0, 1, 0, 1, 0, 1]                        # the cache holds the file's values
    pd.testing.assert_frame_equal(again, load_metadata(path.parent, cache=False))

def test_no_cache_write_across_a_fork(slow_background_cache, cache_dir):
    load_metadata(slow_background_cache.parent)
    assert not list(cache_dir.glob('*.arrow')) and mc._writes
    pid = os.fork()
    if pid == 0: os._exit(0 if not mc._writes else 3)  # the child: no write in progress (the thread is not here either)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(list(cache_dir.glob('*.arrow'))) == 1 and not mc._writes  # the fork waited for the write

# ---------------------------------------------------------------- a script that loads and exits at once
LOAD_AND_EXIT = '''
import sys, time
import herbarium_fastai.metadata as md
import herbarium_fastai.metadata_cache as mc
import herbarium_fastai.metadata_worker as mw
if sys.argv[2] == 'hit': md._parse_file = None  # a cache miss would call it and fail
t0 = time.perf_counter()
df = md.load_metadata(sys.argv[1])
print(len(df), round(time.perf_counter() - t0, 3))
'''

def test_cache_written_by_a_script_that_exits(tmp_path):
    "A process that loads a large file and exits at once leaves a whole cache entry, silently; the next process hits it"
    n = mc._BACKGROUND_ROWS  # large enough to be cached by the background thread
    path = write(tmp_path/'big'/'train'/'metadata.json', meta2021(n))
    env = {**os.environ, 'HERBARIUM_CACHE': str(tmp_path/'cache')}
    first = subprocess.run([sys.executable, '-c', LOAD_AND_EXIT, str(path.parent), 'miss'], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0 and first.stderr == '', first.stderr[-2000:]
    assert [p.suffix for p in (tmp_path/'cache'/'metadata').iterdir()] == ['.arrow']   # one whole entry, no temporary file
    second = subprocess.run([sys.executable, '-c', LOAD_AND_EXIT, str(path.parent), 'hit'], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0 and second.stderr == '', second.stderr[-2000:]
    rows, seconds = second.stdout.split()
    assert int(rows) == n and float(seconds) < float(first.stdout.split()[1]), (first.stdout, second.stdout)
