"Training ingredients wired into a whole run: the averaged weights are the model files, retraining the head leaves the body, a balanced model gets no second correction, a sub-center ArcFace model answers alike everywhere, multi-scale TTA, recipes refused in one line"
import json

import pandas as pd
import torch
from safetensors.torch import load_file

from conftest import assert_clean_failure, run_command

# the smallest timm resnet proves the wiring as well as resnet34; one checkpoint after every epoch, to compare with
TINY = ['--arch', 'test_resnet', '--no-pretrained', '--size', 32, '--bs', 16, '--lr', 1e-3, '--workers', 0, '--no-report',
        '--checkpoint-every', '0']

def _differs(a, b): return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())

def test_weight_average_is_what_the_model_files_hold(flat_dataset, tmp_path):
    "--ema: model.safetensors holds the average (the checkpoint's model), not the live weights it also keeps; with CutMix on"
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, '--epochs', 2, '--ema', 0.9, '--mixup', 'cutmix',
                         '--valid-tta', '1,1.2', *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    saved, checkpoint = load_file(str(run/'model.safetensors')), torch.load(run/'checkpoints'/'last.pth', weights_only=True)
    assert set(saved) == set(checkpoint['model']) and all(torch.equal(saved[k], checkpoint['model'][k]) for k in saved)
    assert _differs(saved, checkpoint['live_model'])                            # the live weights are another model
    assert checkpoint['average_steps'] > 0
    config = json.loads((run/'config.json').read_text())['options']
    assert (config['ema'], config['mixup']) == (0.9, 'cutmix')
    assert json.loads((run/'metrics.json').read_text())['prior_correction']['tta'] == [1., 1.2]  # τ chosen under multi-scale TTA
    result = run_command('herbarium-predict', run, flat_dataset, '--out', tmp_path/'sub.csv', '--tta-scales', '1.2', '--workers', 0)
    assert result.returncode == 0 and len(pd.read_csv(tmp_path/'sub.csv')) > 0, result.stderr[-3000:]

def test_rebalancing_retrains_the_head_only(flat_dataset, tmp_path):
    """--rebalance-epochs after a logit-adjusted loss: the body as the same run without rebalancing left it (the same seed
    repeats a CPU run), the head retrained, recorded in last.pth, no τ chosen, predict works"""
    runs = {n: tmp_path/f'run{n}' for n in (0, 1)}
    for n, run in runs.items():
        result = run_command('herbarium-train', flat_dataset, '--out', run, '--epochs', 2, '--loss', 'logit-adjusted',
                             '--rebalance-epochs', n, *TINY)
        assert result.returncode == 0, result.stderr[-3000:]
    saved, trained = load_file(str(runs[1]/'model.safetensors')), load_file(str(runs[0]/'model.safetensors'))
    body, head = [k for k in saved if k.startswith('0.')], [k for k in saved if k.startswith('1.')]
    assert body and all(torch.allclose(saved[k].float(), trained[k].float(), atol=1e-6) for k in body)  # weights and batch-norm statistics alike
    assert _differs({k: saved[k] for k in head}, trained)
    assert len(pd.read_csv(runs[1]/'history.csv')) == 3                         # 2 epochs + 1 rebalancing
    last = torch.load(runs[1]/'checkpoints'/'last.pth', weights_only=True)
    assert (last['epoch'], last['rebalanced']) == (3, 1) and all(torch.equal(last['model'][k], saved[k]) for k in head)
    description = json.loads((runs[1]/'model.json').read_text())
    assert (description['balanced_by'], description['prior_strength']) == ('rebalanced', 0.)
    result = run_command('herbarium-predict', runs[1], flat_dataset, '--out', tmp_path/'sub.csv', '--prior-correction', '--tta', '--workers', 0)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(tmp_path/'sub.csv')) > 0

def test_recipe_refusals(flat_dataset, tmp_path):
    "A recipe that does not exist, or an option that contradicts the recipe's: one line naming both, nothing written"
    result = run_command('herbarium-train', flat_dataset, '--out', tmp_path/'run', '--recipe', 'fast')
    assert_clean_failure(result, '--recipe fast', 'long-tail, quick')
    result = run_command('herbarium-train', flat_dataset, '--out', tmp_path/'run', '--recipe', 'quick', '--logit-adjustment', 0.5)
    assert_clean_failure(result, '--logit-adjustment 0.5', '--recipe quick')
    assert not (tmp_path/'run').exists()

def test_recipes_in_help():
    "--help lists every recipe with what it sets, and which one is the defaults"
    result = run_command('herbarium-train', '--help')
    assert result.returncode == 0
    text = ' '.join(result.stdout.split())
    for name in ('quick:', 'long-tail (the defaults):', 'gpu-384:'): assert name in text, text[-1500:]

def test_subcenter_arcface_answers_alike_everywhere(flat_dataset, tmp_path):
    "A sub-center ArcFace model: its pickle (the training learner), its safe files in a fresh process, ONNX and the server give the same top-1"
    from fastapi.testclient import TestClient
    from herbarium_fastai.metadata import load_metadata
    from herbarium_fastai.serve import create_app
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, '--classifier', 'subcenter-arcface', *TINY, '--epochs', 3, '--lr', 1e-2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run/'model.json').read_text())['head']['classifier'] == dict(kind='subcenter-arcface', subcenters=3, scale=30.)
    assert run_command('herbarium-export', run, '--onnx').returncode == 0
    answers = {}
    for name, extra in [('pickle', [run/'model.pkl', '--trust-pickle']), ('safe', [run]), ('onnx', [run, '--onnx'])]:
        result = run_command('herbarium-predict', *extra, flat_dataset, '--out', tmp_path/f'{name}.csv', '--workers', 0)
        assert result.returncode == 0, result.stderr[-3000:]
        answers[name] = pd.read_csv(tmp_path/f'{name}.csv').set_index('Id').Predicted.to_dict()
    test = load_metadata(flat_dataset/'test', cache=False)
    files = [flat_dataset/'test'/f for f in test.file_name]
    with TestClient(create_app(run)) as client:
        response = client.post('/identify', files=[('images', (f.name, f.read_bytes(), 'image/jpeg')) for f in files])
    assert response.status_code == 200, response.text
    answers['served'] = {i: r['top'][0]['category_id'] for i, r in zip(test.image_id, response.json()['results'])}
    assert answers['safe'] == answers['pickle'] == answers['onnx'] == answers['served'], answers
    assert len(set(answers['safe'].values())) > 1                               # (a model that answers, not one species for all)
