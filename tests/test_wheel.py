"""The kit as users get it: the wheel (not this source tree) holds every module, the server's page and the commands;
nbs/11_kaggle.ipynb's install cell installs it with `--no-index` from a folder made by tools/wheelhouse.py into a fresh
environment that holds the rest; installed so, it serves its page.

The wheel under test is $HERBARIUM_WHEEL where .ci/run's wheel legs set it (the suite then runs on a copy of the tree
without the package's sources), else one built here from the checkout."""
import configparser, json, os, re, shutil, subprocess, sys, sysconfig, venv, zipfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, serving

DATA = Path(__file__).parent/'data'
SETTINGS = configparser.ConfigParser(delimiters=['=']); SETTINGS.read(ROOT/'settings.ini')
LACKING = ('herbarium', 'msgspec')  # what the stand-in image lacks: the kit, and one of its requirements (from the index)

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    if os.environ.get('HERBARIUM_WHEEL'): return Path(os.environ['HERBARIUM_WHEEL'])
    dist = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--wheel-dir', dist, ROOT], check=True, capture_output=True)
    return next(dist.glob('herbarium_fastai-*.whl'))

def test_wheel_holds_what_the_kit_runs_with(wheel):
    files = set(zipfile.ZipFile(wheel).namelist())
    modules = {re.search(r'#\| default_exp ([\w.]+)', nb.read_text())[1] for nb in (ROOT/'nbs').glob('*.ipynb') if '#| default_exp' in nb.read_text()}
    assert {f'herbarium_fastai/{m}.py' for m in modules} <= files
    assert {f'herbarium_fastai/static/{name}' for name in ('index.html', 'serve.css', 'serve.js')} <= files
    info = next(f.split('/')[0] for f in files if f.endswith('.dist-info/METADATA'))
    entry_points = zipfile.ZipFile(wheel).read(f'{info}/entry_points.txt').decode()
    for line in SETTINGS['DEFAULT']['console_scripts'].split(): assert line.replace('=', ' = ') in entry_points
    metadata = zipfile.ZipFile(wheel).read(f'{info}/METADATA').decode()
    required = re.findall(r'^Requires-Dist: ([^;\n]+)$', metadata, re.M)
    assert sorted(re.match(r'[\w.-]+', r)[0] for r in required) == sorted(re.match(r'[\w.-]+', r)[0] for r in SETTINGS['DEFAULT']['requirements'].split())
    assert not [r for r in required if '==' in r], "a runtime requirement pins a version: users' environments could not keep theirs"

def _image(folder):
    "This environment's packages (pip's too), less those of LACKING, as a folder of links: what a notebook's image holds"
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()['purelib']).iterdir():
        if not any(n in entry.name.lower() for n in LACKING): (folder/entry.name).symlink_to(entry)
    return folder

@pytest.fixture(scope='module')
def fresh(tmp_path_factory):
    "A fresh virtual environment that sees the stand-in image's packages (a .pth file), pip among them: its python"
    folder = tmp_path_factory.mktemp('notebook')
    venv.create(folder/'env', with_pip=False)
    site = next((folder/'env').glob('lib/python*/site-packages'))
    (site/'image.pth').write_text(f"{_image(folder/'image')}\n")
    return folder/'env'/'bin'/'python'

@pytest.fixture(scope='module')
def kaggle_input(wheel, fresh, tmp_path_factory):
    "What Kaggle mounts at /kaggle/input: a dataset folder that tools/wheelhouse.py wrote for the stand-in image"
    root = tmp_path_factory.mktemp('kaggle-input')
    have = subprocess.run([fresh, '-m', 'pip', 'list', '--format=freeze'], check=True, capture_output=True, text=True).stdout
    (root.parent/'have.txt').write_text(have)
    made = subprocess.run([sys.executable, ROOT/'tools'/'wheelhouse.py', root/'herbarium-wheels', '--have', root.parent/'have.txt', '--wheel', wheel],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    return root

def test_wheelhouse_holds_what_the_image_lacks(kaggle_input, wheel):
    wheels = sorted(p.name.split('-')[0] for p in (kaggle_input/'herbarium-wheels').iterdir())
    assert wheels == ['herbarium_fastai', 'msgspec'], wheels

def test_kaggle_install_cell_installs_offline_and_the_kit_serves_its_page(kaggle_input, fresh, tmp_path):
    installed = subprocess.run([fresh, ROOT/'tools'/'wheelhouse.py', '--install-from', kaggle_input], capture_output=True, text=True,
                               env={**os.environ, 'PIP_INDEX_URL': 'http://127.0.0.1:9/'})  # nothing fetched: no index answers
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = subprocess.run([fresh, '-c', 'import herbarium_fastai, msgspec; print(herbarium_fastai.__file__, msgspec.__file__)'],
                           capture_output=True, text=True, cwd=tmp_path)
    site = Path(fresh).parent.parent/'lib'
    assert where.returncode == 0 and all(Path(f).is_relative_to(site) for f in where.stdout.split()), (where.stdout, where.stderr[-2000:])
    run = tmp_path/'run'
    shutil.copytree(DATA/'model_0.1', run, ignore=shutil.ignore_patterns('*.pkl'))
    with serving(run, program=Path(fresh).parent/'herbarium-serve') as (url, _):
        page = httpx.get(f'{url}/')
        assert page.status_code == 200 and 'static/serve.js' in page.text
        for name in ('serve.js', 'serve.css'): assert httpx.get(f'{url}/static/{name}').status_code == 200
        assert httpx.get(f'{url}/model').json()['architecture'] == 'test_resnet'

def test_install_cell_installs_nothing_by_bare_name():
    "The notebook installs from the attached wheels or from the kit's repository (settings.ini's git_url), never from the index by name"
    sys.path.insert(0, str(ROOT/'tools'))
    try: from wheelhouse import install_cell
    finally: sys.path.remove(str(ROOT/'tools'))
    cell = install_cell()
    assert "'--no-index'" in cell and f"git+{SETTINGS['DEFAULT']['git_url']}'" in cell
    code = [''.join(c['source']) for c in json.loads((ROOT/'nbs'/'11_kaggle.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
    assert not [c for c in code if re.search(r'pip install( -\S+)* herbarium[_-]fastai\b', c)]
