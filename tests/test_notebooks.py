"The outputs kept in the notebooks (tools/refresh_outputs.py): no error, no path of the machine that ran them, a modest size"
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))
# absolute paths a machine leaves in outputs: temporary and home folders, a checkout, a virtual environment, IPython's cells
MACHINE_PATH = re.compile(r'/tmp/|/var/folders/|/home/\w|/root/|/work/|site-packages|<ipython-input-|/Users/\w')

def _outputs(fname):
    for i, cell in enumerate(json.loads(fname.read_text())['cells']):
        for out in cell.get('outputs', []): yield i, out

def _texts(out):
    if out['output_type'] == 'stream': yield ''.join(out['text'])
    for kind, value in out.get('data', {}).items():
        if kind.startswith('text/'): yield ''.join(value)

@pytest.mark.parametrize('fname', NOTEBOOKS, ids=lambda f: f.name)
def test_outputs_hold_no_error_and_no_machine_path(fname):
    for i, out in _outputs(fname):
        assert out['output_type'] != 'error', f"{fname.name}, cell {i}: an error output ({out.get('ename')})"
        for text in _texts(out):
            found = MACHINE_PATH.search(text)
            assert not found, f"{fname.name}, cell {i}: a path of the machine that ran it: ...{text[max(0, found.start() - 40):found.end() + 40]}..."

def test_the_checks_catch_what_they_look_for(tmp_path):
    "The test above means something: an error output and a machine path in a notebook are found"
    nb = dict(cells=[dict(cell_type='code', source='', metadata={}, outputs=[
        dict(output_type='stream', name='stdout', text=['wrote /tmp/tmpab12/run/model.json\n']),
        dict(output_type='error', ename='ValueError', evalue='bad', traceback=[])])])
    (tmp_path/'x.ipynb').write_text(json.dumps(nb))
    outputs = list(_outputs(tmp_path/'x.ipynb'))
    assert MACHINE_PATH.search(next(_texts(outputs[0][1]))) and outputs[1][1]['output_type'] == 'error'

def test_notebooks_stay_small():
    total = sum(f.stat().st_size for f in (ROOT/'nbs').rglob('*') if f.is_file())
    assert total < 15 * 2**20, f"nbs/ holds {total / 2**20:.1f} MB (keep it under 15 MB: plots at a modest resolution)"

WALKTHROUGH = ROOT/'nbs'/'10_walkthrough.ipynb'
FLOOR = 0.8  # macro F1 the saved walkthrough must show on the validation split and the test sheets (chance: 0.1; it reached 0.96 and 0.95)

def printed_scores(fname):
    "The dicts with a `macro_f1` that a notebook's saved outputs show, in order"
    for _, out in _outputs(fname):
        for text in _texts(out):
            if text.lstrip().startswith('{') and "'macro_f1'" in text: yield ast.literal_eval(text.strip())

def test_saved_walkthrough_shows_a_model_that_learns(fname=WALKTHROUGH):
    "A refresh of the walkthrough whose model does not learn cannot land: its saved validation and test scores are read"
    scores = list(printed_scores(fname))
    validation = [s for s in scores if 'valid_loss' in s]   # the metrics of the last training step (the rebalancing)
    test = [s for s in scores if set(s) == {'macro_f1', 'accuracy'}]   # score_submission on the test sheets
    assert validation and test, f"{fname.name}: no saved validation or test score"
    assert validation[-1]['macro_f1'] >= FLOOR and test[-1]['macro_f1'] >= FLOOR, (validation[-1], test[-1])
