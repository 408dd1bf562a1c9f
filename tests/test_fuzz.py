"""Fuzzing, bounded and seeded (tests/fuzz_targets.py; tools/fuzz.py runs the same targets 10,000 cases long): the HTTP
API from its own OpenAPI schema, with and without the token, in this process (no port opened); and `load_metadata` on
documents mutated from valid 2020, 2021 and 2022 files"""
import shutil

import pytest

from fuzz_targets import fuzz_api, fuzz_metadata
from test_serve import DATA

TOKEN = 'fuzz-token-0123456789'

@pytest.fixture(scope='module')
def locked_app(tmp_path_factory):
    "The tiny run's app as shared beyond loopback (a token required), with small limits: 50 kB a file, 3 files a request"
    from herbarium_fastai.serve import create_app
    run = tmp_path_factory.mktemp('fuzz')/'run'
    shutil.copytree(DATA/'model_0.1', run, ignore=shutil.ignore_patterns('*.pkl'))
    return create_app(run, host='0.0.0.0', token=TOKEN, max_upload_mb=0.05, max_files=3)

@pytest.mark.parametrize('with_token', [True, False], ids=['with the token', 'without it'])
def test_api_fuzz(locked_app, with_token):
    "No 5xx, every error one line of JSON, and without the token nothing but /health answered"
    result = fuzz_api(locked_app, TOKEN, cases=60 if with_token else 25, with_token=with_token, seed=21)
    assert result['problems'] == [], result['problems'][:5]
    counts = result['counts']
    assert counts['5xx'] == 0 and counts['cases'] >= (100 if with_token else 40), counts
    if with_token: assert counts.get('/model 200', 0) > 0 and any(k.startswith('/identify 4') for k in counts), counts
    else: assert counts.get('/health 200') == 1 and counts.get('/model 401', 0) > 0, counts

def test_metadata_fuzz():
    "Mutated metadata files: loaded, or refused with a MetadataError/HerbariumError in one line naming the file; nothing cached when refused"
    result = fuzz_metadata(cases=400, seed=21)
    assert result['problems'] == [], result['problems'][:5]
    counts = result['counts']
    assert counts['cases'] == 400 and counts['refused'] > 200 and counts.get('loaded', 0) > 0 and 'tracebacks' not in counts, counts
