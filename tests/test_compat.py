"Files written by herbarium_fastai 0.1 and 0.3 (tests/data, see its README): the model files load and predict alike, the killed runs resume"
import json, shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_command
from herbarium_fastai.inference import load_model, predict_metadata
from herbarium_fastai.metadata import load_metadata

DATA = Path(__file__).parent/'data'

@pytest.mark.parametrize('version', ['0.1', '0.3'])
def test_model_files_load_and_predict_alike(version, flat_dataset, tmp_path):
    safe = load_model(DATA/f'model_{version}')                                  # model.json + model.safetensors
    description = safe.model_description
    assert (description.kit_version, description.arch, len(description.classes)) == (f'{version}.0', 'test_resnet', 5)
    shutil.copy(DATA/f'model_{version}'/'model.pkl', tmp_path/'model.pkl')      # the pickle alone (no model.json beside it)
    pickled = load_model(tmp_path/'model.pkl', trust_pickle=True)
    assert pickled.model_description == description                             # (0.1: its settings dict, read as a description)
    test_df = load_metadata(flat_dataset/'test')
    a, b = (predict_metadata(m, test_df, k=2, bs=16, num_workers=0) for m in (safe, pickled))
    assert a.category_id.tolist() == b.category_id.tolist()
    taxa = [c for c in a.columns if c.startswith('top_') and not c.startswith('top_k') and not c.endswith('probability')]
    assert taxa and a[taxa + ['answer_rank']].equals(b[taxa + ['answer_rank']])   # the best taxon at every rank, and the answer's rank

def test_model_of_0_3_with_rank_heads(flat_dataset):
    "0.3's model.json with rank heads, thresholds and a prior strength: the heads are rebuilt and predict"
    model = load_model(DATA/'model_0.3')
    description = model.model_description
    assert description.rank_heads == dict(weight=0.5) and set(description.rank_thresholds) == {'species', 'genus', 'family', 'order'}
    assert description.prior_strength is not None and description.answer_precision is None   # (0.3 did not record it)
    test_df = load_metadata(flat_dataset/'test')
    heads = predict_metadata(model, test_df, k=2, bs=16, num_workers=0, rank_source='heads', prior_strength=description.prior_strength)
    assert len(heads) == len(test_df) and heads.top_family_probability.between(0, 1).all()

def _resume(version, flat_dataset, tmp_path):
    "Copy the killed run of `version`, point its config at this test's data, resume it with herbarium-train --resume"
    run = tmp_path/'run'
    shutil.copytree(DATA/f'killed_run_{version}', run)
    config = json.loads((run/'config.json').read_text())
    config['options']['data'] = str(flat_dataset)                               # the same data, where this test has it
    (run/'config.json').write_text(json.dumps(config))
    result = run_command('herbarium-train', '--resume', run)
    assert result.returncode == 0, result.stderr[-3000:]
    history = pd.read_csv(run/'history.csv')
    assert history.epoch.tolist() == [0, 1, 2, 3] and history.train_loss.notna().all()
    resumed = json.loads((run/'config.json').read_text())['resumed']
    assert resumed[0]['epoch'] == 1 and resumed[0]['versions']['herbarium_fastai'] != f'{version}.0'
    return run, config

def test_killed_run_of_0_1_resumes(flat_dataset, tmp_path):
    run, config = _resume('0.1', flat_dataset, tmp_path)
    assert 'num_workers' in config['options']                                   # the option's name in 0.1
    now, then = load_model(run).model_description.classes, load_model(DATA/'model_0.1').model_description.classes
    without_genus = lambda classes: [{k: v for k, v in c.items() if k != 'genus'} for c in classes]
    assert without_genus(now) == without_genus(then)                             # the same species, in the same order
    assert all(c['genus'] is None for c in then) and all(c['genus'] == c['species'].split()[0] for c in now)  # 0.3: 2021's genus

def test_killed_run_of_0_3_resumes(flat_dataset, tmp_path):
    run, config = _resume('0.3', flat_dataset, tmp_path)
    assert config['options']['subset'] == {} and 'workers' in config['options']  # 0.3's layout: the subset as one dict
    assert load_model(run).model_description.classes == load_model(DATA/'model_0.3').model_description.classes

@pytest.mark.parametrize('version', ['0.1', '0.3'])
def test_checkpoint_of_older_kits_reads_as_a_record_and_writes_back_the_same_layout(version):
    "`learner.Checkpoint` reads last.pth of 0.1 and 0.3 as typed fields; `to_dict` gives back what torch.load read"
    import torch
    from herbarium_fastai.learner import Checkpoint, load_checkpoint
    fname = DATA/f'killed_run_{version}'/'checkpoints'/'last.pth'
    raw, checkpoint = torch.load(fname, map_location='cpu', weights_only=True), load_checkpoint(fname)
    assert isinstance(checkpoint, Checkpoint) and (checkpoint.epoch, checkpoint.rebalanced, checkpoint.live_model) == (raw['epoch'], 0, None)
    assert checkpoint.to_dict().keys() == raw.keys()

def test_model_description_of_older_kits_keeps_its_layout():
    "model.json of 0.3 read as a `ModelDescription` and written back: the same keys and values but the kit's version"
    from herbarium_fastai.model_file import ModelDescription
    written = json.loads((DATA/'model_0.3'/'model.json').read_text())
    again = ModelDescription.load(DATA/'model_0.3'/'model.json').to_dict()
    assert {k: v for k, v in again.items() if k not in ('format_version', 'herbarium_fastai')} == \
           {k: v for k, v in written.items() if k not in ('format_version', 'herbarium_fastai', 'checksum')}
