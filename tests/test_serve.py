"""herbarium-serve: every endpoint and every bad input through FastAPI's test client, batching, the command in a subprocess,
a load test on loopback, a real browser (Debian's chromium + chromium-driver, through selenium), and `--onnx`"""
import asyncio, io, json, os, re, shutil, socket, struct, subprocess, sys, tempfile, threading, time, warnings, zlib
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import ROOT, command_line, free_port, run_command, serving
from herbarium_fastai.inference import DARWIN_CORE_TERMS, load_safe_model, predict_images
from herbarium_fastai.onnx_model import export_onnx_model
from herbarium_fastai.core import HerbariumError
from herbarium_fastai.options import ServeOptions
from herbarium_fastai.serve import UploadError, app_from_environment, create_app, decode_image

DATA = Path(__file__).parent/'data'

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A trained tiny run (test_resnet, 5 species: tests/data/model_0.1's safe files, no pickle) with metrics.json and model.onnx"
    folder = tmp_path_factory.mktemp('serve')/'run'
    shutil.copytree(DATA/'model_0.1', folder, ignore=shutil.ignore_patterns('*.pkl'))
    (folder/'metrics.json').write_text(json.dumps(dict(valid=dict(accuracy=0.875, macro_f1=0.86))))
    export_onnx_model(folder)
    return folder

@pytest.fixture(scope='module')
def sheets(flat_dataset):
    "The test images of the flat dataset (JPEG files) and what `predict_images` says is each one's species"
    files = sorted((flat_dataset/'test'/'images').rglob('*.jpg'))
    return files

@pytest.fixture(scope='module')
def expected(run, sheets):
    "The top-1 category id of each sheet, by `predict_images` (PyTorch)"
    table = predict_images(load_safe_model(run, cpu=True), sheets, k=1)
    return dict(zip(map(str, table['item']), table.category_id.tolist()))

@pytest.fixture(scope='module')
def client(run):
    "The app with small limits (10 kB a file, 3 files a request), through the test client"
    with TestClient(create_app(run, max_upload_mb=0.01, max_files=3)) as c: yield c

def image_bytes(colour='red', size=(60, 80), format='PNG'):
    buffer = io.BytesIO(); Image.new('RGB', size, colour).save(buffer, format); return buffer.getvalue()

def upload(*files, field='images'):
    "multipart `files` for the test client: (name, bytes) pairs in `field`"
    return [(field, (name, data, 'application/octet-stream')) for name, data in files]

def bomb(width=20_000, height=20_000):
    "A small PNG whose header claims `width` × `height` pixels (by default 4.5 × Pillow's limit)"
    png = bytearray(image_bytes('white', (8, 8)))
    png[16:24] = struct.pack('>II', width, height)
    png[29:33] = struct.pack('>I', zlib.crc32(bytes(png[12:29])))
    return bytes(png)

def assert_good_request(client, sheets, expected):
    "A good request is answered, and rightly"
    response = client.post('/identify', files=upload((sheets[0].name, sheets[0].read_bytes())))
    assert response.status_code == 200, response.text
    assert response.json()['results'][0]['top'][0]['category_id'] == expected[str(sheets[0])]

# ---------------------------------------------------------------- endpoints

def test_page_and_its_files_are_served_with_nothing_from_elsewhere(client):
    page = client.get('/')
    assert page.status_code == 200 and page.headers['content-type'].startswith('text/html')
    for name in ('serve.js', 'serve.css'):
        assert f'static/{name}' in page.text
        response = client.get(f'/static/{name}')
        assert response.status_code == 200 and len(response.text) > 500
        assert 'http://' not in response.text and 'https://' not in response.text and '//cdn' not in response.text
    assert 'http://' not in page.text and 'https://' not in page.text

def test_model_card(client):
    card = client.get('/model').json()
    assert (card['architecture'], card['image_size'], card['species'], card['families'], card['orders']) == ('test_resnet', 32, 5, 3, 2)
    assert card['metrics'] == dict(valid=dict(accuracy=0.875, macro_f1=0.86))
    from herbarium_fastai import __version__
    assert (card['kit_version'], card['model_kit_version'], card['runtime']) == (__version__, '0.1.0', 'pytorch')

def test_health(client):
    health = client.get('/health').json()
    assert health['status'] == 'ok' and {'images', 'batches', 'largest_batch', 'uptime_s'} <= set(health)

def test_openapi_documents_identify(client):
    spec = client.get('/openapi.json').json()
    body = spec['paths']['/identify']['post']['requestBody']['content']['multipart/form-data']['schema']
    assert body['required'] == ['images'] and {p['name'] for p in spec['paths']['/identify']['post']['parameters']} == {'k', 'heatmap', 'preview'}
    k = next(p for p in spec['paths']['/identify']['post']['parameters'] if p['name'] == 'k')['schema']
    assert (k['minimum'], k['maximum'], k['default']) == (1, 100, 5) and sorted(spec['paths']) == ['/health', '/identify', '/model']
    assert client.get('/docs').status_code == 200

def test_identify_one_and_many_with_k(client, sheets, expected):
    files = sheets[:3]
    response = client.post('/identify?k=3', files=upload(*((f.name, f.read_bytes()) for f in files)))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer['k'], answer['model'], answer['runtime']) == (3, 'test_resnet', 'pytorch')
    assert [r['file'] for r in answer['results']] == [f.name for f in files]
    table = predict_images(client.app.state.classifier.learn, files, k=3)
    for result, (_, rows) in zip(answer['results'], table.groupby('item', sort=False)):
        assert [p['category_id'] for p in result['top']] == rows.category_id.tolist()
        assert all(abs(p['probability'] - q) < 1e-5 for p, q in zip(result['top'], rows.probability))
        assert set(result['top'][0]) == {'category_id', 'species', 'genus', 'family', 'order', 'probability'}
        first = rows.iloc[0]   # the deepest confident rank (issue 12), as predict_images gives it
        assert (result['answer']['rank'], result['answer']['name']) == (first.answer_rank, first.answer)
        assert result['ranks']['family'] == dict(name=first.top_family, probability=pytest.approx(first.top_family_probability, abs=1e-5))
        assert 'heatmap' not in result and 'preview' not in result
        core = result['darwin_core']   # the answer as a Darwin Core identification, named by the file
        assert list(core) == list(DARWIN_CORE_TERMS) and (core['catalogNumber'], core['associatedMedia']) == (Path(result['file']).stem, result['file'])
        assert (core['taxonRank'], core['scientificName'], core['identificationVerificationStatus']) == (first.answer_rank, first.answer, 'unverified')
        assert core['identificationRemarks'].endswith('; '.join(f"{p['species']} ({p['probability']:.3f})" for p in result['top'][:3]))
    assert sum(p['probability'] for p in client.post('/identify?k=5', files=upload(('a.png', image_bytes()))).json()['results'][0]['top']) == pytest.approx(1, abs=1e-4)

def test_heatmap_and_preview(client):
    response = client.post('/identify?heatmap=true&preview=true&k=1', files=upload(('tall.tif', image_bytes('green', (30, 70), 'TIFF'))))
    assert response.status_code == 200, response.text
    result = response.json()['results'][0]
    heatmap = result['heatmap']
    assert (heatmap['height'], heatmap['width']) == (len(heatmap['values']), len(heatmap['values'][0]))
    values = [v for row in heatmap['values'] for v in row]
    assert min(values) >= 0 and (max(values) == pytest.approx(1) or max(values) == 0)
    assert result['preview'].startswith('data:image/jpeg;base64,') and (result['width'], result['height']) == (30, 70)

# ---------------------------------------------------------------- bad input, and the next request

TRUNCATED = image_bytes('red', (300, 200), 'JPEG')[:600]
BAD = {  # name: (files, query, status, words in the error, the file named)
    'non-image': (upload(('notes.txt', b'just some text')), '', 415, 'not an image', 'notes.txt'),
    'truncated JPEG': (upload(('cut.jpg', TRUNCATED)), '', 400, 'cannot decode the image', 'cut.jpg'),
    'decompression bomb': (upload(('bomb.png', bomb())), '', 413, 'decompression bomb', 'bomb.png'),
    'bomb Pillow only warns of': (upload(('big.png', bomb(10_000, 10_000))), '', 413, '10000×10000 pixels, over the limit of 89,478,485 (a decompression bomb?)', 'big.png'),
    'GIF': (upload(('anim.gif', image_bytes(format='GIF'))), '', 415, 'send JPEG, PNG or TIFF', 'anim.gif'),
    'over-size upload': (upload(('huge.png', os.urandom(30_000))), '', 413, 'MB, over the 0.01 MB limit', 'huge.png'),
    'too many files': (upload(*((f'{n}.png', image_bytes()) for n in range(4))), '', 413, 'too many files: at most 3', '3.png'),
    'far too many files': (upload(*((f'{n}.png', image_bytes()) for n in range(9))), '', 413, 'too many files: at most 3', None),
    'wrong field name': (upload(('a.png', image_bytes()), field='image'), '', 400, "no files in the field 'images' (the request has: image)", None),
    'text in the field': (None, '', 400, "the field 'images' holds text", None),
    'no body': ([], '', 400, "no files in the field 'images'", None),
    'bad k': (upload(('a.png', image_bytes())), '?k=0', 422, 'k: Input should be greater than or equal to 1', None),
    'k not a number': (upload(('a.png', image_bytes())), '?k=many', 422, 'k: Input should be a valid integer', None),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_input_is_refused_in_one_line_and_the_next_request_is_served(case, client, sheets, expected):
    files, query, status, words, file = BAD[case]
    if case == 'text in the field': response = client.post('/identify', data={'images': 'a.png'}, files=upload(('x.png', image_bytes()), field='other'))
    elif case == 'no body': response = client.post('/identify')
    else: response = client.post('/identify' + query, files=files)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {'error', 'file'} and words in body['error'] and '\n' not in body['error'], body
    assert body['file'] == file
    if file: assert body['error'].startswith(file) or file in body['error']
    assert_good_request(client, sheets, expected)

def test_a_bad_file_among_good_ones_is_named(client, sheets, expected):
    response = client.post('/identify', files=upload(('good.png', image_bytes()), ('cut.jpg', TRUNCATED), ('good2.png', image_bytes())))
    assert (response.status_code, response.json()['file']) == (400, 'cut.jpg')
    assert_good_request(client, sheets, expected)

def test_body_over_the_limit_is_refused_before_it_is_read(client, sheets, expected):
    "A body over max_files × max_upload_mb (+ 1 MB): 413 by its Content-Length, and when it streams in without one"
    big = os.urandom(3 * 10_486 + 2**20 + 10)
    response = client.post('/identify', files=upload(('big.png', big)))
    assert response.status_code == 413 and 'request body over' in response.json()['error']
    def chunks():
        for start in range(0, len(big), 65536): yield big[start:start + 65536]
    response = client.post('/identify', content=chunks(), headers={'content-type': 'multipart/form-data; boundary=x'})
    assert response.status_code == 413 and 'request body over' in response.json()['error']
    assert_good_request(client, sheets, expected)

def test_uploads_leave_no_file_behind(run, sheets, tmp_path, monkeypatch):
    "Files over 1 MB are spooled to the temporary folder while the request is read: nothing is left there after it"
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    big = io.BytesIO(); Image.effect_noise((1200, 1200), 64).convert('RGB').save(big, 'PNG')
    assert big.tell() > 2**20
    with TestClient(create_app(run)) as client:
        response = client.post('/identify', files=upload(('noise.png', big.getvalue()), ('cut.jpg', TRUNCATED)))
        assert response.status_code == 400
        assert client.post('/identify', files=upload(('noise.png', big.getvalue()))).status_code == 200
    assert list(tmp_path.iterdir()) == []

# ---------------------------------------------------------------- options, the environment, warnings

def test_options_are_one_value(run):
    "create_app(ServeOptions) or create_app(run, **options); the defaults are ServeOptions'; unknown names and no run refused in one line"
    assert create_app(run).state.options == ServeOptions(run=run)
    app = create_app(ServeOptions(run=run, max_files=2), max_upload_mb=1)
    assert app.state.options == ServeOptions(run=str(run), max_files=2, max_upload_mb=1)
    with TestClient(app) as client:
        assert (client.get('/model').json()['max_files'], client.get('/model').json()['max_upload_mb']) == (2, 1)
        response = client.post('/identify', files=upload(*((f'{n}.png', image_bytes()) for n in range(3))))
        assert response.status_code == 413 and 'at most 2' in response.json()['error']
    for call, words in [(lambda: create_app(run, max_file=2), 'create_app: unknown option max_file'),
                        (lambda: create_app(run, max_files=0), '--max-files 0: give 1 or more'),
                        (lambda: create_app(run, run=run), 'create_app: two runs'),
                        (lambda: create_app(onnx=True), 'create_app: no run folder')]:
        with pytest.raises(HerbariumError, match=words): call()

def test_app_from_environment(run, monkeypatch, tmp_path):
    "The run from HERBARIUM_SERVE_RUN (or the options), the options from HERBARIUM_SERVE_OPTIONS as herbarium-serve --workers sets them"
    monkeypatch.setenv('HERBARIUM_SERVE_RUN', str(run))
    monkeypatch.setenv('HERBARIUM_SERVE_OPTIONS', json.dumps(dict(onnx=True, max_upload_mb=2, max_files=4, threads=1)))
    assert app_from_environment().state.options == ServeOptions(run=str(run), onnx=True, max_upload_mb=2, max_files=4, threads=1)
    every = ServeOptions(run=str(tmp_path), port=9000, workers=2, threads=1)   # every option, as ServeOptions.to_dict writes them
    monkeypatch.setenv('HERBARIUM_SERVE_OPTIONS', json.dumps(every.to_dict()))
    assert app_from_environment().state.options == every.replace(run=str(run))   # HERBARIUM_SERVE_RUN wins
    monkeypatch.delenv('HERBARIUM_SERVE_RUN')
    monkeypatch.setenv('HERBARIUM_SERVE_OPTIONS', json.dumps(dict(run=str(run))))
    assert app_from_environment().state.options == ServeOptions(run=str(run))
    monkeypatch.setenv('HERBARIUM_SERVE_OPTIONS', json.dumps(dict(max_file=4)))
    with pytest.raises(HerbariumError, match='HERBARIUM_SERVE_OPTIONS: unknown option max_file'): app_from_environment()
    monkeypatch.delenv('HERBARIUM_SERVE_OPTIONS')
    with pytest.raises(HerbariumError, match='set HERBARIUM_SERVE_RUN to a run folder'): app_from_environment()

@pytest.mark.filterwarnings('error')
def test_no_process_wide_warning_filter(run, client):
    "Making an app leaves the warning filters alone; Pillow's bomb warning does not escape decode_image, even from many threads at once"
    filters = list(warnings.filters)
    create_app(run)
    assert warnings.filters == filters
    response = client.post('/identify', files=upload(('big.png', bomb(10_000, 10_000))))
    assert (response.status_code, response.json()['file']) == (413, 'big.png'), response.text
    def refused(n):
        try: decode_image(bomb(10_000, 10_000), f'{n}.png')
        except UploadError as e: return e.status
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: two in warnings.catch_warnings at once would leave a filter behind (or let the warning out)
    try:
        with ThreadPoolExecutor(8) as pool: assert set(pool.map(refused, range(2000))) == {413}
    finally: sys.setswitchinterval(interval)
    assert warnings.filters == filters

# ---------------------------------------------------------------- batching

def test_concurrent_requests_share_a_forward_pass_and_the_loop_stays_free(run, sheets, expected):
    app = create_app(run, batch_wait_ms=50)
    batcher, gate, running = app.state.batcher, threading.Event(), threading.Event()
    run_batch = batcher.run_batch
    def gated(jobs): running.set(); gate.wait(10); return run_batch(jobs)
    batcher.run_batch = gated
    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url='http://test') as client:
            post = lambda f: client.post('/identify', files=upload((f.name, f.read_bytes())))
            first = asyncio.ensure_future(post(sheets[0]))
            while not running.is_set(): await asyncio.sleep(0.01)      # the first forward pass is running (held at the gate)
            others = [asyncio.ensure_future(post(f)) for f in sheets[1:7]]
            health = await asyncio.wait_for(client.get('/health'), 5)   # the event loop answers meanwhile
            for _ in range(500):                                         # the six are decoded and queued
                if batcher.queue.qsize() == 6: break
                await asyncio.sleep(0.02)
            gate.set()
            return health, [await first] + [await o for o in others]
    health, responses = asyncio.run(scenario())
    batcher.close()
    assert health.status_code == 200
    assert [r.json()['results'][0]['top'][0]['category_id'] for r in responses] == [expected[str(f)] for f in sheets[:7]]
    assert (batcher.batches, batcher.jobs, batcher.largest) == (2, 7, 6)

# ---------------------------------------------------------------- the command, a real server, the load test, the browser

@pytest.fixture(scope='module')
def server(run):
    "The tiny run served by the command (a bound of 32 pending requests: the load test's 16 clients fit, whatever the machine's memory)"
    with serving(run, '--max-pending', 32) as served: yield served

def test_command_serves_on_loopback(server):
    url, process = server
    assert httpx.get(f'{url}/model').json()['architecture'] == 'test_resnet'
    assert httpx.get(f'{url}/').text.count('serve.js') == 1

def test_command_with_two_workers(run, sheets, expected):
    "--workers 2: uvicorn's processes make the app from the environment (HERBARIUM_SERVE_RUN, HERBARIUM_SERVE_OPTIONS)"
    with serving(run, '--workers', 2, '--max-files', 2) as (url, _):
        assert httpx.get(f'{url}/model').json()['max_files'] == 2
        f = sheets[0]
        response = httpx.post(f'{url}/identify', files=upload((f.name, f.read_bytes())), timeout=60)
        assert response.json()['results'][0]['top'][0]['category_id'] == expected[str(f)]

def test_command_refuses_a_bad_run_in_one_line(tmp_path):
    result = run_command('herbarium-serve', tmp_path, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
    assert 'model.json: no such file' in result.stderr
    result = run_command('herbarium-serve', DATA/'model_0.1', '--onnx', timeout=120)
    assert result.returncode == 2 and 'herbarium-export' in result.stderr and 'Traceback' not in result.stderr

def test_help_imports_no_heavy_library():
    probe = ("import sys; from herbarium_fastai import cli\n"
             "try: cli.serve_command.main(['--help'])\nexcept SystemExit: pass\n"
             "sys.stderr.write(repr(sorted(m for m in ('torch', 'fastai', 'pandas', 'fastapi', 'uvicorn', 'onnxruntime') if m in sys.modules)))")
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)
    assert result.stderr == '[]' and '--max-upload-mb' in result.stdout, result.stderr[-2000:]

def rss_kb(pid):
    "Resident memory of process `pid` in kB (with one worker, uvicorn serves the app in the process it starts)"
    return next(int(line.split()[1]) for line in Path(f'/proc/{pid}/status').read_text().splitlines() if line.startswith('VmRSS:'))

@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='the load test reads memory from /proc (Linux)')
def test_load_200_requests_16_clients(server, sheets, expected):
    "200 requests from 16 concurrent clients on loopback: all answered rightly; the server's memory flat (≤ 1.2× from the 50th to the 200th)"
    url, process = server
    done, lock, memory = [], threading.Lock(), {}
    def client(number):
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in range(number, 200, 16):
                f = sheets[n % len(sheets)]
                response = http.post('/identify', files=upload((f.name, f.read_bytes())))
                top = response.json()['results'][0]['top'][0]['category_id'] if response.status_code == 200 else response.text
                with lock:
                    done.append(top == expected[str(f)])
                    if len(done) in (50, 200): memory[len(done)] = rss_kb(process.pid)
    with ThreadPoolExecutor(16) as pool: list(pool.map(client, range(16)))
    assert len(done) == 200 and all(done), done.count(False)
    assert memory[200] <= 1.2 * memory[50], memory
    health = httpx.get(f'{url}/health').json()
    assert health['images'] >= 200 and health['largest_batch'] > 1, health   # concurrent requests were batched

def _chromium():
    "Paths of Debian's chromium and chromedriver, or None"
    paths = [shutil.which(name) for name in ('chromium', 'chromedriver')]
    return paths if all(paths) else None

@pytest.fixture(scope='module')
def drawn_run(tmp_path_factory):
    "Drawn synthetic sheets (320 px: the heat map has something to show) and a tiny model trained on them at 128 px (a 4 × 4 map)"
    from herbarium_fastai.synth import make_synthetic_dataset
    dest = tmp_path_factory.mktemp('drawn')
    make_synthetic_dataset(dest/'data', species=3, size=320, seed=5, test_per_species=1, min_per_species=8, max_per_species=8, workers=0)
    result = run_command('herbarium-train', dest/'data', '--out', dest/'run', '--arch', 'test_resnet', '--no-pretrained', '--size', 128,
                         '--epochs', 3, '--bs', 8, '--lr', 3e-3, '--workers', 0, '--no-report')
    assert result.returncode == 0, result.stderr[-3000:]
    return dest/'run', sorted((dest/'data'/'test'/'images').rglob('*.jpg'))

@pytest.mark.skipif(_chromium() is None, reason="no chromium + chromedriver here (Debian: apt-get install -y chromium chromium-driver; .ci/run does)")
def test_browser(drawn_run, tmp_path):
    "Headless Chromium on a server shared beyond loopback: log in through the URL the command printed, upload sheets, read the top species and the heat map, toggle it, take a screenshot"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    run, files = drawn_run
    chromium, chromedriver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', f'--user-data-dir={tmp_path/"profile"}',
                 '--window-size=1200,1000'):
        options.add_argument(flag)
    with serving(run, '--host', '0.0.0.0') as (url, process):
        token = re.search(r'/\?token=(\S+) ', process.stdout.readline())[1]
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        _browse(driver, url, run, files, tmp_path, login=f'{url}/?token={token}')

def _browse(driver, url, run, files, tmp_path, login=None):
    "The browser test's steps, on the page at `url` (first opened at `login`, the URL with the token)"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        driver.get(login or url + '/')
        assert driver.current_url == url + '/'   # the token left the address bar: the page's cookie holds it
        assert [(c['httpOnly'], c['sameSite']) for c in driver.get_cookies()] == ([(True, 'Strict')] if login else [])
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: 'test_resnet' in d.find_element(By.ID, 'model-card').text)
        table = predict_images(load_safe_model(run, cpu=True), files, k=1)
        expected, answers = dict(zip(map(str, files), table.category_id)), {str(f): row for f, (_, row) in zip(files, table.iterrows())}
        driver.find_element(By.ID, 'files').send_keys('\n'.join(str(f) for f in files))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '.result')) == len(files))
        cards = driver.find_elements(By.CSS_SELECTOR, '.result')
        names = {c['category_id']: c['species'] for c in json.loads((run/'model.json').read_text())['classes']}
        for card, f in zip(cards, files):
            assert card.get_attribute('data-file') == f.name
            assert card.find_element(By.CSS_SELECTOR, '.species').text == names[expected[str(f)]]
            assert len(card.find_elements(By.CSS_SELECTOR, 'ol.top li')) == min(5, len(names))
            assert card.find_element(By.CSS_SELECTOR, '.family').text.split(' (')[0] == answers[str(f)].top_family
            assert card.find_element(By.CSS_SELECTOR, '.answer strong').text == answers[str(f)].answer
        heatmap = cards[0].find_element(By.CSS_SELECTOR, 'canvas.heatmap')
        assert heatmap.is_displayed()
        painted = driver.execute_script(
            "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return [c.width, c.height, n];", heatmap)
        assert painted[0] > 0 and painted[2] == painted[0] * painted[1], painted   # every cell of the map is drawn
        assert 0 <= float(heatmap.get_attribute('data-peak-x')) <= 1
        shot = tmp_path/'serve.png'
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 500
        if os.environ.get('HERBARIUM_SCREENSHOT'): shutil.copy(shot, ROOT/os.environ['HERBARIUM_SCREENSHOT'])
        driver.find_element(By.ID, 'show-heatmap').click()
        assert not heatmap.is_displayed()
        assert 'identified' in driver.find_element(By.ID, 'status').text
        assert driver.find_element(By.ID, 'download').is_enabled()
        csv_lines = driver.execute_script('return csvText();').splitlines()   # what "Download CSV" saves
        assert csv_lines[0] == 'file,position,category_id,species,genus,family,order,probability,answer_rank,answer,answer_probability' and len(csv_lines) == 1 + len(files) * min(5, len(names))
        assert csv_lines[1].startswith(f'{files[0].name},1,{expected[str(files[0])]},')
        assert driver.find_element(By.ID, 'download-darwin-core').is_enabled()
        core = pd.read_csv(io.StringIO(driver.execute_script('return darwinCoreText();')), dtype=str, keep_default_na=False)  # "Download Darwin Core"
        assert tuple(core.columns) == DARWIN_CORE_TERMS and core.associatedMedia.tolist() == [f.name for f in files]
        assert core.scientificName.tolist() == [answers[str(f)].answer for f in files]
    finally: driver.quit()

# ---------------------------------------------------------------- ONNX

def test_onnx_predictions_equal_pytorch_top1(run, flat_dataset, tmp_path):
    "herbarium-predict --onnx on the flat dataset's test set (20 images; the demo set takes minutes to train for): the same top-1"
    for flags, name in (([], 'torch.csv'), (['--onnx'], 'onnx.csv')):
        result = run_command('herbarium-predict', run, flat_dataset, '--out', tmp_path/name, '--workers', 0, '--bs', 8, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
    torch_sub, onnx_sub = (pd.read_csv(tmp_path/n) for n in ('torch.csv', 'onnx.csv'))
    assert len(torch_sub) == 20 and torch_sub.equals(onnx_sub)
    refused = run_command('herbarium-predict', run, flat_dataset, '--out', tmp_path/'heads.csv', '--onnx', '--rank-source', 'heads')
    assert refused.returncode == 2 and 'roll-up' in refused.stderr and 'Traceback' not in refused.stderr and not (tmp_path/'heads.csv').exists()

def test_onnx_server_answers_as_pytorch(run, sheets, expected):
    with TestClient(create_app(run, onnx=True)) as client:
        assert client.get('/model').json()['runtime'] == 'onnxruntime'
        files = sheets[:8]
        response = client.post('/identify?heatmap=true', files=upload(*((f.name, f.read_bytes()) for f in files)))
        results = response.json()['results']
        assert [r['top'][0]['category_id'] for r in results] == [expected[str(f)] for f in files]
        assert all('heatmap' in r for r in results)

def test_export_onnx_command(run, tmp_path):
    folder = tmp_path/'run'
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns('model.onnx'))
    result = run_command('herbarium-export', folder, '--onnx')
    assert result.returncode == 0 and (folder/'model.onnx').stat().st_size > 0, result.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ['metrics.json', 'model.json', 'model.onnx', 'model.safetensors']
    result = run_command('herbarium-export', tmp_path/'nowhere', '--onnx')
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
