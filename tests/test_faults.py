"""Faults other than a kill: a disk that fills up while the kit writes (a small tmpfs where this machine lets the tests
mount one, else every write through `core.write_atomically` patched to fail as a full disk does), and the model
files and checkpoints cut to half their size or with bytes changed. What the user sees: one line naming the file."""
import errno, io, json, os, shutil, subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from herbarium_fastai import core
from herbarium_fastai.cli import predict_command, train_command
from herbarium_fastai.core import WriteError, file_sha256, is_temporary

DATA = Path(__file__).parent/'data'

class SmallDisk:
    "A folder on its own tmpfs of `size` MB (as root, where the machine allows a mount), else a folder whose writes are patched (also with $HERBARIUM_TEST_PATCHED_DISK set)"
    def __init__(self, folder:Path, monkeypatch, size=48):
        self.folder, self.monkeypatch, self.filler = folder, monkeypatch, folder/'filler'
        folder.mkdir()
        try: self.tmpfs = not os.environ.get('HERBARIUM_TEST_PATCHED_DISK') and subprocess.run(
                ['mount', '-t', 'tmpfs', '-o', f'size={size}m', 'tmpfs', str(folder)], capture_output=True).returncode == 0
        except OSError: self.tmpfs = False  # (no mount command)
        self.original = core._write_temporary

    def fill(self, leave=0):
        "Use up the space but `leave` bytes: the tmpfs filled by a file; else writes of more than `leave` bytes fail with ENOSPC"
        if self.tmpfs:
            with open(self.filler, 'wb') as f: os.posix_fallocate(f.fileno(), 0, max(1, shutil.disk_usage(self.folder).free - leave))
            return
        def full_disk(tmp, content):
            self.original(tmp, content)
            if self.folder in Path(tmp).parents and Path(tmp).stat().st_size > leave:
                os.truncate(tmp, leave)   # what was written before the disk was full
                raise OSError(errno.ENOSPC, 'No space left on device', str(tmp))
        self.monkeypatch.setattr(core, '_write_temporary', full_disk)

    def free(self):
        "Space is back"
        if self.tmpfs: self.filler.unlink()
        else: self.monkeypatch.setattr(core, '_write_temporary', self.original)

    def leftovers(self)->list:
        "Temporary files of `write_atomically` left anywhere on the disk"
        return [p for p in self.folder.rglob('*') if is_temporary(p.name)]

@pytest.fixture
def disk(tmp_path, monkeypatch):
    small = SmallDisk(tmp_path/'disk', monkeypatch)
    yield small
    if small.tmpfs: subprocess.run(['umount', '-l', str(small.folder)], capture_output=True)

def run_main(command, args, capsys):
    "A command run in this process (so that a patched write reaches it): its exit status and what it printed on stderr"
    try: command.main([str(a) for a in args]); status = 0
    except SystemExit as e: status = e.code
    return status, capsys.readouterr().err

def assert_no_space(status, stderr, command, target):
    "Exit status 2, no traceback, and the error in one line (the last; a training run's notes may come before): the file, 'no space left'"
    errors = [line for line in stderr.strip().splitlines() if line.startswith(f'{command}: error: ')]
    assert status == 2 and len(errors) == 1 and stderr.strip().endswith(errors[0]) and 'Traceback' not in stderr, (status, stderr[-2000:])
    assert str(target) in errors[0] and 'no space left' in errors[0], errors[0]

# ---------------------------------------------------------------- a full disk, writer by writer

@pytest.fixture(scope='module')
def learn():
    from herbarium_fastai.inference import load_safe_model
    return load_safe_model(DATA/'model_0.1', cpu=True)

def _changed(learn, n):
    "`learn` with its weights moved a little by `n` (so that each save writes other bytes)"
    with torch.no_grad(): next(learn.model.parameters()).add_(n * 1e-3)
    return learn

def _noise_jpeg(path, n):
    pixels = np.random.default_rng(n).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, 'JPEG', quality=95)
    return path

def _write(kind, folder, learn, n):
    "Write the file of `kind` in `folder` (content depending on `n`); returns its path"
    from herbarium_fastai.inference import save_safe_model, write_submission
    from herbarium_fastai.learner import _save
    from herbarium_fastai.onnx_model import export_onnx
    from herbarium_fastai.report import _save_figure
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    table = pd.DataFrame(dict(Id=np.arange(60_000), Predicted=np.arange(60_000) % (7 + n)))
    if kind == 'checkpoint': return _save(dict(model=_changed(learn, n).model.state_dict(), epoch=n), folder/'checkpoints'/'last.pth')
    if kind == 'model files': return save_safe_model(_changed(learn, n), folder).with_suffix('.safetensors')
    if kind == 'model.onnx': return export_onnx(_changed(learn, n), folder)
    if kind == 'submission': return write_submission(table, folder/'submission.csv')
    if kind == 'top-k CSV': return core.write_csv(folder/'top_k.csv', table.assign(species='Rosa canina L.'))
    if kind == 'report figure':
        figure = plt.figure(figsize=(12, 12)); plt.imshow(np.random.default_rng(n).random((300, 300))); return _save_figure(figure, folder/'confusion.png')
    raise ValueError(kind)

TARGETS = {'checkpoint': 'checkpoints/last.pth', 'model files': 'model.safetensors', 'model.onnx': 'model.onnx',
           'submission': 'submission.csv', 'top-k CSV': 'top_k.csv', 'report figure': 'confusion.png'}  # the file each writes first

@pytest.mark.parametrize('kind', list(TARGETS))
def test_full_disk_leaves_the_previous_version(kind, disk, learn):
    "On a full disk: one line naming the file and 'no space left'; the previous version whole; no temporary file; then, with space, written"
    target = disk.folder/TARGETS[kind]
    target.parent.mkdir(parents=True, exist_ok=True); target.write_bytes(b'the previous version')
    before = file_sha256(target)
    disk.fill(leave=64 * 2**10)   # less than any of these files
    with pytest.raises(WriteError) as refused: _write(kind, disk.folder, learn, 2)
    message = str(refused.value)
    assert message.startswith(f'{target}: no space left on the device') and '\n' not in message, message
    assert file_sha256(target) == before and disk.leftovers() == []
    disk.free()
    assert _write(kind, disk.folder, learn, 3) == target and file_sha256(target) != before

def test_full_disk_for_resized_images_and_the_metadata_cache(disk, tmp_path):
    "A resized image is a problem of that image, saying 'no space left'; the metadata cache a warning, the load going on; nothing left behind"
    from herbarium_fastai.images import shrink_image
    from herbarium_fastai.metadata import load_metadata
    source = _noise_jpeg(tmp_path/'sheet.jpg', 0)
    train = tmp_path/'data'/'train'/'metadata.json'; train.parent.mkdir(parents=True)
    images = [dict(id=i, file_name=f'images/{i}.jpg', width=700, height=1000, license=0) for i in range(20_000)]
    train.write_text(json.dumps(dict(images=images, annotations=[dict(id=i, image_id=i, category_id=i % 3, institution_id=0) for i in range(20_000)],
                                     categories=[dict(id=c, name=f'Rosa sp{c}', family='Rosaceae', order='Rosales') for c in range(3)],
                                     institutions=[dict(id=0, name='NY')], licenses=[], info=dict(year=2021))))
    disk.fill(leave=64 * 2**10)
    problem = shrink_image(source, disk.folder/'small'/'sheet.jpg', size=700, quality=95)
    assert 'no space left' in problem and not (disk.folder/'small'/'sheet.jpg').exists()
    with pytest.warns(UserWarning, match='could not write the metadata cache .*no space left'):
        assert len(load_metadata(train, cache=disk.folder/'cache')) == 20_000
    assert disk.leftovers() == [] and not any(p.suffix == '.arrow' for p in disk.folder.rglob('*'))
    disk.free()
    assert shrink_image(source, disk.folder/'small'/'sheet.jpg', size=700, quality=95) is None
    assert len(load_metadata(train, cache=disk.folder/'cache')) == 20_000 and len(list((disk.folder/'cache').rglob('*.arrow'))) == 1

# ---------------------------------------------------------------- a full disk, the commands

def test_full_disk_during_a_run_then_resume(disk, flat_dataset, capsys):
    "A killed run resumed on a nearly full disk: its next checkpoint does not fit; one line; last.pth as it was; --resume with space finishes"
    run = disk.folder/'run'
    shutil.copytree(DATA/'killed_run_0.3', run)
    config = json.loads((run/'config.json').read_text()); config['options'].update(data=str(flat_dataset), report=False)
    (run/'config.json').write_text(json.dumps(config))
    last = file_sha256(run/'checkpoints'/'last.pth')
    disk.fill(leave=2**20)   # room for config.json and history.csv, not for a checkpoint (best.pth 1.9 MB, last.pth 5.8 MB)
    status, stderr = run_main(train_command, ['--resume', run], capsys)
    assert_no_space(status, stderr, 'herbarium-train', run/'checkpoints')
    assert file_sha256(run/'checkpoints'/'last.pth') == last and disk.leftovers() == []
    disk.free()
    status, stderr = run_main(train_command, ['--resume', run], capsys)
    assert status == 0, stderr[-3000:]
    assert pd.read_csv(run/'history.csv').epoch.tolist() == [0, 1, 2, 3] and (run/'model.json').is_file() and disk.leftovers() == []

def test_full_disk_for_the_submission_then_rerun(disk, flat_dataset, capsys):
    out = disk.folder/'submission.csv'
    out.write_text('Id,Predicted\n')   # an earlier submission
    disk.fill()
    status, stderr = run_main(predict_command, [DATA/'model_0.3', flat_dataset, '--out', out, '--workers', 0], capsys)
    assert_no_space(status, stderr, 'herbarium-predict', out)
    assert out.read_text() == 'Id,Predicted\n' and disk.leftovers() == []
    disk.free()
    status, stderr = run_main(predict_command, [DATA/'model_0.3', flat_dataset, '--out', out, '--workers', 0], capsys)
    assert status == 0 and len(pd.read_csv(out)) == 20, stderr[-2000:]

# ---------------------------------------------------------------- torn files

@pytest.fixture(scope='module')
def sealed_run(tmp_path_factory, learn):
    "A run folder of this kit: model.json with its checksum and those of model.safetensors and model.onnx"
    from herbarium_fastai.inference import save_safe_model
    from herbarium_fastai.onnx_model import export_onnx_model
    folder = tmp_path_factory.mktemp('sealed')/'run'
    save_safe_model(learn, folder)
    export_onnx_model(folder)
    return folder

def _damage(path:Path, how:str):
    "Cut `path` to half its size, or change one byte: for model.json a letter of a species' name (still JSON, saying another thing)"
    data = bytearray(path.read_bytes())
    if how == 'half': data = data[:len(data) // 2]
    elif path.suffix == '.json': at = data.index(b'"species": "') + 14; data[at] = data[at] ^ 0x01
    else: data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

@pytest.mark.parametrize('how', ['half', 'flipped'])
@pytest.mark.parametrize('name', ['model.safetensors', 'model.json', 'model.onnx'])
def test_torn_model_file_refused_in_one_line(name, how, sealed_run, flat_dataset, tmp_path, capsys):
    run = tmp_path/'run'; shutil.copytree(sealed_run, run)
    _damage(run/name, how)
    out = tmp_path/'submission.csv'
    status, stderr = run_main(predict_command, [run, flat_dataset, '--out', out, '--workers', 0, *(['--onnx'] if name == 'model.onnx' else [])], capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and 'Traceback' not in stderr, stderr[-2000:]
    assert str(run/name) in lines[0] and not out.exists(), lines[0]

@pytest.mark.parametrize('how', ['half', 'flipped'])
def test_torn_checkpoint_refused_in_one_line(how, flat_dataset, tmp_path, capsys):
    run = tmp_path/'run'; shutil.copytree(DATA/'killed_run_0.3', run)
    config = json.loads((run/'config.json').read_text()); config['options']['data'] = str(flat_dataset)
    (run/'config.json').write_text(json.dumps(config))
    _damage(run/'checkpoints'/'last.pth', how)
    status, stderr = run_main(train_command, ['--resume', run], capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and 'Traceback' not in stderr, stderr[-2000:]
    assert lines[0].startswith(f"herbarium-train: error: {run/'checkpoints'/'last.pth'}: damaged or cut short"), lines[0]
