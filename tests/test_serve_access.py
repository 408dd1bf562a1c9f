"""herbarium-serve beyond loopback, from outside: the token the command prints (the API's bearer header, the page's
cookie), --no-auth, and a flood of uploads at the size limit past --max-pending"""
import io, re, shutil, socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve import DATA, image_bytes, serving, upload

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "The tiny test_resnet of tests/data (5 species, 32 px): its safe files"
    folder = tmp_path_factory.mktemp('access')/'run'
    shutil.copytree(DATA/'model_0.1', folder, ignore=shutil.ignore_patterns('*.pkl'))
    return folder

def assert_refused(response, status, words):
    "A refusal as every error of the server: `status`, a one-line JSON `{error, file}` that says `words`"
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {'error', 'file'} and '\n' not in body['error'] and words in body['error'], body

def test_beyond_loopback_the_printed_token_is_required(tiny_run):
    "--host 0.0.0.0: a URL with a token; 401 without it (or with a wrong one), 200 with it; the page logs in once; /health open"
    with serving(tiny_run, '--host', '0.0.0.0') as (url, process):
        line = process.stdout.readline()
        printed = re.search(r'http://(\S+):\d+/\?token=(\S+) \(test_resnet', line)
        assert printed and printed[1] == socket.gethostname(), line
        token, sheet = unquote(printed[2]), upload(('red.png', image_bytes()))
        for response in (httpx.get(f'{url}/model'), httpx.get(f'{url}/'), httpx.get(f'{url}/openapi.json'),
                         httpx.post(f'{url}/identify', files=sheet),
                         httpx.get(f'{url}/model', headers={'Authorization': 'Bearer not-the-token'})):
            assert_refused(response, 401, 'token')
            assert response.headers['www-authenticate'] == 'Bearer'
        assert httpx.get(f'{url}/health').json()['status'] == 'ok'
        bearer = {'Authorization': f'Bearer {token}'}
        assert httpx.get(f'{url}/model', headers=bearer).json()['architecture'] == 'test_resnet'
        assert httpx.post(f'{url}/identify', files=sheet, headers=bearer).json()['results'][0]['file'] == 'red.png'
        with httpx.Client(base_url=url) as page:                                # a browser: the URL once, then the cookie
            login = page.get(f'/?token={printed[2]}')
            assert login.status_code == 303 and login.headers['location'] == './', login.text
            assert {'HttpOnly', 'SameSite=Strict'} <= {p.strip() for p in login.headers['set-cookie'].split(';')}
            assert page.get('/').status_code == 200 and page.post('/identify', files=sheet).status_code == 200
            assert_refused(page.get('/?token=not-the-token'), 401, 'wrong token')
    assert token not in process.stderr.read()                                   # nothing the server logged holds it

def test_no_auth_serves_openly_with_a_warning(tiny_run):
    with serving(tiny_run, '--host', '0.0.0.0', '--no-auth') as (url, process):
        assert '?token=' not in process.stdout.readline()
        assert process.stderr.readline().startswith('herbarium-serve: warning: --no-auth: no token required')
        assert httpx.get(f'{url}/model').json()['architecture'] == 'test_resnet'

def noise_jpeg(side=2000, seed=0)->bytes:
    "A JPEG of random pixels (3.4 MB at 2000 × 2000): big for its size, and slow to decode"
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO(); Image.fromarray(pixels).save(buffer, 'JPEG', quality=90); return buffer.getvalue()

def peak_rss_mb(pid)->float:
    "The peak resident memory of process `pid` so far (VmHWM), in MB"
    return next(int(l.split()[1]) for l in Path(f'/proc/{pid}/status').read_text().splitlines() if l.startswith('VmHWM:')) / 1024

@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads the peak memory from /proc (Linux)')
def test_flood_past_max_pending(tiny_run):
    """16 clients at once, each with two 3.4 MB JPEGs (the limit: 4 MB, 2 files), at a server that holds 2 requests and
    decodes on 1 thread: the rest are turned away at once (503, Retry-After, one line); the peak memory grows by what 2
    held requests take (their 2 × 7 MB of files, and the decoding thread's image, 12 MB, and its RGB copy), not by 16
    requests' files (measured on a 2-core machine: 24 MB with the bound, 122 MB with --max-pending 100); and the next
    request is served"""
    sheets = [noise_jpeg(seed=n) for n in range(2)]
    files = upload(*((f'{n}.jpg', data) for n, data in enumerate(sheets)))
    with serving(tiny_run, '--max-upload-mb', 4, '--max-files', 2, '--max-pending', 2, '--threads', 1) as (url, process):
        assert httpx.post(f'{url}/identify', files=files, timeout=60).status_code == 200   # warmed up: one request held
        before = peak_rss_mb(process.pid)
        def client(n):
            with httpx.Client(timeout=120) as http: return http.post(f'{url}/identify', files=files)
        with ThreadPoolExecutor(16) as pool: answers = list(pool.map(client, range(16)))
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
        for busy in (r for r in answers if r.status_code == 503):
            assert_refused(busy, 503, 'busy: 2 requests are being read, decoded or queued (--max-pending)')
            assert busy.headers['retry-after'] == '1'
        grown = peak_rss_mb(process.pid) - before
        assert grown < 2 * (2 * 3.4) + 2 * 12 + 30, (grown, statuses)   # 2 held requests' files, 1 decoded image and its copy, 30 MB slack
        health = httpx.get(f'{url}/health').json()
        assert (health['pending'], health['refused_busy']) == (0, statuses.count(503)), health
        assert httpx.post(f'{url}/identify', files=files, timeout=60).status_code == 200
