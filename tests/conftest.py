import configparser, os, socket, subprocess, sys, tempfile, time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# metadata caches of the tests' throwaway datasets go to a throwaway folder, in this process and its children
os.environ['HERBARIUM_CACHE'] = tempfile.mkdtemp(prefix='herbarium-test-cache-')
# under pytest-xdist (`-n 2`), each worker and the commands it runs get their share of the cores: torch's default of
# one thread a core in every worker oversubscribes the CPU (lite0's convolutions ran several times slower so)
if 'PYTEST_XDIST_WORKER_COUNT' in os.environ:
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, len(os.sched_getaffinity(0)) // int(os.environ['PYTEST_XDIST_WORKER_COUNT']))))
    if 'torch' in sys.modules: sys.modules['torch'].set_num_threads(int(os.environ['OMP_NUM_THREADS']))

def _entry_points():
    "command name -> (module, function), from settings.ini's console_scripts"
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    pairs = (line.split('=') for line in cfg['DEFAULT']['console_scripts'].split() if '=' in line)
    return {name: tuple(target.split(':')) for name, target in pairs}

def command_line(name, *args):
    "The installed console script `name`; where it is not installed (a work tree), the same entry point through python"
    if (BIN/name).exists(): return [str(BIN/name), *map(str, args)]
    if name not in _entry_points(): return [name, *map(str, args)]
    module, attribute = _entry_points()[name]
    code = (f"import sys, importlib; sys.argv[0] = {name!r}; entry = importlib.import_module({module!r})\n"
            f"for part in {attribute!r}.split('.'): entry = getattr(entry, part)\nsys.exit(entry())")
    return [sys.executable, '-c', code, *map(str, args)]

def run_command(*args, env=None, timeout=600):
    "Run one of the kit's commands (or any program) in a subprocess; returns the CompletedProcess"
    full_env = {**os.environ, 'MPLBACKEND': 'Agg', **(env or {})}
    return subprocess.run(command_line(*args), capture_output=True, text=True, env=full_env, timeout=timeout)

def assert_clean_failure(result, *words):
    "Exit status 2, one line on stderr that contains `words`, no traceback"
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'Traceback' not in result.stderr
    for w in words: assert w in lines[0], (w, lines[0])

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@contextmanager
def serving(run, *options, program=None):
    "`herbarium-serve RUN *options` (or `program RUN *options`) in a subprocess on a free loopback port, once it answers: (base URL, process)"
    import httpx
    port = free_port()
    command = [str(program), str(run), '--port', str(port), *map(str, options)] if program else command_line('herbarium-serve', run, '--port', port, *options)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
    url = f'http://127.0.0.1:{port}'
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f'{url}/health', timeout=2).status_code == 200: break
        except httpx.TransportError: pass
        if process.poll() is not None or time.time() > deadline:
            process.kill(); pytest.fail(f'the server did not start: {process.communicate()[1][-3000:]}')
        time.sleep(0.25)
    try: yield url, process
    finally:
        process.terminate()
        try: process.wait(20)
        except subprocess.TimeoutExpired: process.kill()

# a valid Herbarium 2021 train metadata file of one image, for tests that break it one way at a time
GOOD = dict(images=[dict(id=10, width=32, height=48, file_name='images/000/05/10.jpg', license=0)],
            annotations=[dict(id=1, image_id=10, category_id=5, institution_id=0)],
            categories=[dict(id=5, name='Acer rubrum', family='Sapindaceae', order='Sapindales')],
            institutions=[dict(id=0, name='NY')], licenses=[dict(id=0, name='CC', url='')], info=dict(year=2021))

@pytest.fixture(scope='session')
def flat_dataset(tmp_path_factory):
    "A trivially separable dataset (one flat colour per species) in the Kaggle 2021 layout"
    from herbarium_fastai.synth import make_synthetic_dataset
    dest = tmp_path_factory.mktemp('flat')/'data'
    make_synthetic_dataset(dest, species=5, seed=3, size=48, style='flat', test_per_species=4, min_per_species=8, workers=0)
    return dest
