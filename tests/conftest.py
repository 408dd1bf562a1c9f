import os, subprocess, sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

def run_command(*args, env=None, timeout=600):
    "Run one of the kit's commands (or any program) in a subprocess; returns the CompletedProcess"
    cmd = [str(BIN/args[0]) if (BIN/args[0]).exists() else args[0], *map(str, args[1:])]
    full_env = {**os.environ, 'MPLBACKEND': 'Agg', **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)

@pytest.fixture(scope='session')
def flat_dataset(tmp_path_factory):
    "A trivially separable dataset (one flat colour per species) in the Kaggle 2021 layout"
    from herbarium_fastai.synth import make_synthetic_dataset
    dest = tmp_path_factory.mktemp('flat')/'data'
    make_synthetic_dataset(dest, species=5, seed=3, size=48, style='flat', test_per_species=4, min_per_species=8, workers=0)
    return dest
