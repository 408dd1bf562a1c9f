"""The fuzz targets of tests/test_fuzz.py (a few hundred cases, in the suite) and tools/fuzz.py (the long runs):
the HTTP API from its own OpenAPI schema (schemathesis), and `load_metadata` on documents mutated from valid ones
(hypothesis). Each returns its counts; a run is clean when `problems` is empty."""
import copy, json, re, shutil, tempfile, traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from herbarium_fastai.core import HerbariumError, MetadataError, is_temporary

# ---------------------------------------------------------------- the HTTP API

def _api_problem(response, needs_token:bool, path:str)->str|None:
    "What is wrong with one answer of the API, or None: a 5xx, an error that is not one line of JSON, a gate that let it through"
    if response.status_code >= 500: return f'{response.status_code} from {path}: {response.text[:200]}'
    if needs_token and path != '/health' and response.status_code != 401: return f'{response.status_code} without the token from {path}'
    if response.status_code < 400: return None
    try: body = response.json()
    except ValueError: return f'{response.status_code} from {path}: not JSON ({response.text[:80]!r})'
    if not (isinstance(body, dict) and set(body) == {'error', 'file'} and isinstance(body['error'], str) and '\n' not in body['error']):
        return f'{response.status_code} from {path}: not a one-line error ({str(body)[:120]})'
    return None

def fuzz_api(app,                # a FastAPI app of `serve.create_app`
             token:str,          # its token (the schema is read with it)
             cases:int=50,       # examples per operation (an operation without parameters has one)
             with_token=True,    # send the token with each request; False: not it (none, or what schemathesis makes up), and every route but /health must be a 401
             seed:int=0,         # hypothesis' seed: the same cases every run
             progress=None,      # called with the counts after each case (a long run's report)
            )->dict:
    "Fuzz every operation of `app`'s OpenAPI schema with schemathesis: counts of cases and statuses, and the problems found"
    import schemathesis
    bearer = {'Authorization': f'Bearer {token}'}
    schema = schemathesis.openapi.from_asgi('/openapi.json', app, headers=bearer)
    counts, problems = Counter(), []
    for result in schema.get_all_operations():
        operation = result.ok()
        @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy())
        def one(case):
            counts['cases'] += 1
            try: response = case.call(headers=bearer if with_token else None)
            except Exception as e:  # the app raised through the test client: a traceback in a real server's log
                counts['tracebacks'] += 1; problems.append(f'{operation.path}: Traceback: {type(e).__name__}: {str(e)[:200]}'); return
            counts[f'{operation.path} {response.status_code}'] += 1
            if (problem := _api_problem(response, not with_token, operation.path)): problems.append(problem)
            if progress: progress(counts)
        from hypothesis import seed as hypothesis_seed
        hypothesis_seed(seed)(one)()
    counts['5xx'] = sum(v for k, v in counts.items() if re.search(r' 5\d\d$', k))
    return dict(counts=dict(counts), problems=problems)

# ---------------------------------------------------------------- load_metadata

def _images_2021(n=4): return [dict(id=100 + i, file_name=f'images/000/{i % 2:02d}/{100 + i}.jpg', width=700, height=1000, license=0) for i in range(n)]

VALID = {  # name: (the file's path in its dataset, a valid document of that kind)
    '2021 train': ('train/metadata.json', dict(
        images=_images_2021(), annotations=[dict(id=500 + i, image_id=100 + i, category_id=i % 2, institution_id=i % 2) for i in range(4)],
        categories=[dict(id=0, name='Aa calceata (Rchb.f.) Schltr.', family='Orchidaceae', order='Asparagales'),
                    dict(id=1, name='Rosa canina L.', family='Rosaceae', order='Rosales')],
        institutions=[dict(id=0, name='NY'), dict(id=1, name='NL')], licenses=[], info=dict(year=2021))),
    '2021 test': ('test/metadata.json', dict(images=_images_2021(), licenses=[], info=dict(year=2021))),
    '2020 train': ('train/metadata.json', dict(
        images=_images_2021(2), annotations=[dict(id=1, image_id=100, category_id=3, region_id=0), dict(id=2, image_id=101, category_id=3, region_id=0)],
        categories=[dict(id=3, name='Acalypha arvensis Pöpp. & Endl.', family='Euphorbiaceae', genus='Acalypha')],
        regions=[dict(id=0, name='NYBG')], licenses=[], info=dict(year=2020))),
    '2022 train': ('train_metadata.json', dict(
        images=[dict(image_id='00005__001', file_name='00005/00005__001.jpg', license=0), dict(image_id='00007__002', file_name='00007/00007__002.jpg', license=0)],
        annotations=[dict(image_id='00005__001', category_id=5, genus_id=1, institution_id=2), dict(image_id='00007__002', category_id=7, genus_id=1, institution_id=2)],
        categories=[dict(category_id=5, scientificName='Rosa canina L.', family='Rosaceae', genus='Rosa', species='canina', authors='L.'),
                    dict(category_id=7, scientificName='Rosa gallica L.', family='Rosaceae', genus='Rosa', species='gallica', authors='L.')],
        genera=[dict(genus_id=1, genus='Rosa')], institutions=[dict(institution_id=2, collectionCode='NY')], distances=[], licenses=[])),
    '2022 test': ('test_metadata.json', [dict(image_id=0, file_name='000/test-000000.jpg'), dict(image_id=1, file_name='000/test-000001.jpg')]),
}

_DEEP = '\u0000deep\u0000'  # a value replaced, once serialised, by arrays nested this deep
_ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([10**400, -10**400, 2**63, -2**63 - 1]),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2), st.just(_DEEP), st.just(''), st.just('../../etc/passwd'))

def _places(doc, path=()):
    "Every (path, value) in `doc`, its containers' members first"
    yield path, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items: yield from _places(value, (*path, key))

def _container(doc, path): 
    for key in path[:-1]: doc = doc[key]
    return doc

@st.composite
def _structural(draw, doc):
    "`doc` with one value dropped, swapped for another type, made a string, or one list item duplicated"
    places = [p for p, _ in _places(doc) if p]
    if not places: return draw(_ODD_VALUES)
    path = draw(st.sampled_from(places))
    parent, key = _container(doc, path), path[-1]
    kind = draw(st.sampled_from(['drop', 'swap', 'string', 'duplicate']))
    if kind == 'drop': del parent[key]
    elif kind == 'string': parent[key] = json.dumps(parent[key])
    elif kind == 'duplicate' and isinstance(parent, list): parent.append(copy.deepcopy(parent[key]))
    else: parent[key] = draw(_ODD_VALUES)
    return doc

@st.composite
def mutated_document(draw):
    "(kind, file name, bytes): a valid document of some year with 1-3 structural changes, then maybe bytes cut, changed or not UTF-8"
    kind = draw(st.sampled_from(sorted(VALID)))
    name, doc = VALID[kind][0], copy.deepcopy(VALID[kind][1])
    for _ in range(draw(st.integers(1, 3))): doc = draw(_structural(doc))
    text = json.dumps(doc, ensure_ascii=False)
    depth = draw(st.sampled_from([64, 4096, 200_000]))
    data = text.replace(json.dumps(_DEEP, ensure_ascii=False), '[' * depth + ']' * depth).encode('utf-8')
    damage = draw(st.sampled_from(['none', 'none', 'cut', 'byte', 'not utf-8', 'latin-1']))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if damage == 'cut': data = data[:at]
    elif damage == 'byte': data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif damage == 'not utf-8': data = data[:at] + draw(st.sampled_from([b'\xff', b'\xc3', b'\xed\xa0\x80', b'\xf8\x88\x80\x80\x80'])) + data[at:]
    elif damage == 'latin-1': data = text.encode('latin-1', errors='replace')
    return kind, name, data

def fuzz_metadata(cases:int=200, # documents tried
                  seed:int=0,    # hypothesis' seed: the same documents every run
                  progress=None, # called with the counts after each case (a long run's report)
                 )->dict:
    "`load_metadata` on mutated documents: only `MetadataError`/`HerbariumError` (one line, naming the file), nothing cached for a refused file"
    from herbarium_fastai.metadata import load_metadata
    counts, problems, scratch = Counter(), [], Path(tempfile.mkdtemp(prefix='herbarium-fuzz-'))
    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(document=mutated_document())
    def one(document):
        kind, name, data = document
        folder = scratch/f'case{counts["cases"]}'
        path, cache = folder/'data'/name, folder/'cache'
        path.parent.mkdir(parents=True); path.write_bytes(data)
        counts['cases'] += 1
        try: load_metadata(path, cache=cache); counts['loaded'] += 1
        except (MetadataError, HerbariumError) as e:
            counts['refused'] += 1
            message = str(e)
            if '\n' in message or not message.startswith(f'{path}: '): problems.append(f'{kind}: not one line naming the file: {message[:300]!r}')
            if cache.exists() and any(cache.rglob('*')): problems.append(f'{kind}: refused, yet cached: {sorted(map(str, cache.rglob("*")))[:3]}')
        except BaseException as e:  # anything else is a traceback the user would see
            counts['tracebacks'] += 1
            problems.append(f'{kind}: {type(e).__name__}: {str(e)[:200]} at {traceback.extract_tb(e.__traceback__)[-1][:3]}')
        left = [p for p in folder.rglob('*') if is_temporary(p.name)]
        if left: counts['files left'] += len(left); problems.append(f'{kind}: temporary files left: {left[:3]}')
        shutil.rmtree(folder)
        if progress: progress(counts)
    from hypothesis import seed as hypothesis_seed
    try: hypothesis_seed(seed)(one)()
    finally: shutil.rmtree(scratch, ignore_errors=True)
    return dict(counts=dict(counts), problems=problems)
