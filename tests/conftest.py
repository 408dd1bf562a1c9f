import configparser, os, subprocess, sys, tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# metadata caches of the tests' throwaway datasets go to a throwaway folder, in this process and its children
os.environ['HERBARIUM_CACHE'] = tempfile.mkdtemp(prefix='herbarium-test-cache-')
_SCRIPTS = tempfile.mkdtemp(prefix='herbarium-test-scripts-')  # console scripts not installed in this environment

def _entry_points():
    "command name -> (module, function), from settings.ini's console_scripts"
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    pairs = (line.split('=') for line in cfg['DEFAULT']['console_scripts'].split() if '=' in line)
    return {name: tuple(target.split(':')) for name, target in pairs}

def command_line(name, *args):
    "This tree's entry point for `name` (settings.ini), run through python; other programs as installed"
    # this tree's settings.ini first: a console script installed in a shared environment may be another tree's
    if name not in _entry_points(): return [str(BIN/name) if (BIN/name).exists() else name, *map(str, args)]
    module, function = _entry_points()[name]
    # a script file, as pip writes for a console script: fastcore's call_parse only parses sys.argv when its caller
    # is a module with a file (under `python -c` it calls the function with no arguments)
    script = Path(_SCRIPTS)/name
    if not script.exists():
        script.write_text(f"import sys\nfrom {module} import {function}\nif __name__ == '__main__':\n"
                          f"    sys.argv[0] = {name!r}\n    sys.exit({function}())\n")
    return [sys.executable, str(script), *map(str, args)]

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
