import configparser, os, subprocess, sys, tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# metadata caches of the tests' throwaway datasets go to a throwaway folder, in this process and its children
os.environ['HERBARIUM_CACHE'] = tempfile.mkdtemp(prefix='herbarium-test-cache-')

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

@pytest.fixture(scope='session')
def flat_dataset(tmp_path_factory):
    "A trivially separable dataset (one flat colour per species) in the Kaggle 2021 layout"
    from herbarium_fastai.synth import make_synthetic_dataset
    dest = tmp_path_factory.mktemp('flat')/'data'
    make_synthetic_dataset(dest, species=5, seed=3, size=48, style='flat', test_per_species=4, min_per_species=8, workers=0)
    return dest
