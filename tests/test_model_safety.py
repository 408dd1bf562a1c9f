"A shared model file cannot run code: pickles are refused unless trusted, and the safe format never unpickles"
import pickle

import pytest

from conftest import run_command
from herbarium_fastai.core import HerbariumError
from herbarium_fastai.inference import load_model

class _RunsCode:
    "Unpickling this creates a marker file: proof that code ran"
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('ran')",))

def _crafted_pickle(path, marker):
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    return path

def test_crafted_pickle_refused_by_the_command(flat_dataset, tmp_path):
    marker = tmp_path/'code_ran'
    evil = _crafted_pickle(tmp_path/'model.pkl', marker)
    out = tmp_path/'submission.csv'
    for model in (evil, tmp_path):  # the file, and the run folder holding it
        result = run_command('herbarium-predict', model, flat_dataset, '--out', out)
        assert result.returncode == 2 and 'Traceback' not in result.stderr
        assert 'refusing to unpickle' in result.stderr and '--trust-pickle' in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()

def test_crafted_pickle_refused_in_python(tmp_path):
    marker = tmp_path/'code_ran'
    evil = _crafted_pickle(tmp_path/'model.pkl', marker)
    with pytest.raises(HerbariumError, match='refusing to unpickle'): load_model(evil)
    assert not marker.exists()

def test_the_crafted_pickle_does_run_code(tmp_path):
    "The check above means something: unpickling this file does run its code"
    marker = tmp_path/'code_ran'
    pickle.loads(_crafted_pickle(tmp_path/'model.pkl', marker).read_bytes())
    assert marker.read_text() == 'ran'
