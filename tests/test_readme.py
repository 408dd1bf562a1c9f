"README.md is nbs/index.ipynb's text, and .ci/run runs the README's test command"
import importlib.util, re
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_readme_in_step_with_index():
    spec = importlib.util.spec_from_file_location('sync_readme', root/'tools'/'sync_readme.py')
    sync = importlib.util.module_from_spec(spec); spec.loader.exec_module(sync)
    assert (root/'README.md').read_text() == sync.readme_text(), "README.md differs from nbs/index.ipynb: run python tools/sync_readme.py"

def test_readme_has_both_commands():
    text = (root/'README.md').read_text()
    assert 'herbarium-train --demo' in text and 'herbarium-predict demo_run ' in text
    assert re.search(r'<!-- test-command.*?```sh\n(.+?)\n```', text, re.S), "the test command block is missing"
