"Optional features with their packages missing: one line naming every missing package and the install command, exit 2, no traceback"
import os, shutil
from pathlib import Path

import pytest

from conftest import assert_clean_failure, run_command

DATA = Path(__file__).parent/'data'

# imported by every Python the commands start (on PYTHONPATH): the packages named in $HERBARIUM_TEST_REFUSE are not
# found, as if they were not installed
REFUSER = '''import os, sys
refused = set(filter(None, os.environ.get('HERBARIUM_TEST_REFUSE', '').split(',')))
class _Hide:
    "A finder of sys.meta_path that finds nothing of the refused packages (importlib.util.find_spec too says None)"
    def __init__(self, finder): self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in refused: return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name): return getattr(self.finder, name)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''

@pytest.fixture
def refusing(tmp_path):
    "`env(modules)`: an environment in which the kit's commands cannot import `modules`"
    folder = tmp_path/'refuse'; folder.mkdir()
    (folder/'sitecustomize.py').write_text(REFUSER)
    return lambda *modules: dict(PYTHONPATH=os.pathsep.join([str(folder), os.environ.get('PYTHONPATH', '')]),
                                 HERBARIUM_TEST_REFUSE=','.join(modules))

@pytest.fixture
def run(tmp_path):
    "A run folder with the safe model files of a tiny model (tests/data)"
    folder = tmp_path/'run'
    shutil.copytree(DATA/'model_0.3', folder, ignore=shutil.ignore_patterns('*.pkl'))
    return folder

def test_the_refuser_refuses(refusing):
    "The check below means something: the commands' Python does not find a refused module"
    result = run_command('python', '-c', 'import onnx', env=refusing('onnx'))
    assert result.returncode == 1 and "No module named 'onnx'" in result.stderr

@pytest.mark.parametrize('refused, named', [(('onnx', 'onnxruntime'), 'onnx, onnxruntime'), (('onnx',), 'needs onnx,')])
def test_export_onnx_without_its_packages(run, refusing, refused, named):
    result = run_command('herbarium-export', run, '--onnx', env=refusing(*refused))
    assert_clean_failure(result, named, 'pip install "herbarium_fastai[onnx]"')
    assert not (run/'model.onnx').exists()

def test_predict_onnx_without_onnxruntime(run, refusing, flat_dataset, tmp_path):
    result = run_command('herbarium-predict', run, flat_dataset, '--onnx', '--out', tmp_path/'s.csv', env=refusing('onnxruntime'))
    assert_clean_failure(result, 'needs onnxruntime', 'pip install "herbarium_fastai[onnx]"')
    assert not (tmp_path/'s.csv').exists()

def test_serve_without_its_packages(run, refusing):
    result = run_command('herbarium-serve', run, '--port', 0, env=refusing('fastapi', 'uvicorn', 'python_multipart'))
    assert_clean_failure(result, 'herbarium-serve needs fastapi, uvicorn, python-multipart', 'pip install "fastapi')

def test_serve_onnx_without_onnxruntime(run, refusing):
    result = run_command('herbarium-serve', run, '--onnx', '--port', 0, env=refusing('onnxruntime'))
    assert_clean_failure(result, 'needs onnxruntime', 'pip install "herbarium_fastai[onnx]"')
