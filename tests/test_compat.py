"Files written by herbarium_fastai 0.1 (tests/data, see its README): the model files load and predict alike, the killed run resumes"
import json, shutil
from pathlib import Path

import pandas as pd

from conftest import run_command
from herbarium_fastai.inference import load_model, predict_metadata
from herbarium_fastai.metadata import load_metadata

DATA = Path(__file__).parent/'data'

def test_model_files_of_0_1_load_and_predict_alike(flat_dataset, tmp_path):
    safe = load_model(DATA/'model_0.1')                                         # model.json + model.safetensors of 0.1
    description = safe.model_description
    assert (description.kit_version, description.arch, len(description.classes)) == ('0.1.0', 'test_resnet', 5)
    shutil.copy(DATA/'model_0.1'/'model.pkl', tmp_path/'model.pkl')             # the pickle alone (no model.json beside it)
    pickled = load_model(tmp_path/'model.pkl', trust_pickle=True)
    assert pickled.model_description == description                             # its settings dict, read as a description
    test_df = load_metadata(flat_dataset/'test')
    a, b = (predict_metadata(m, test_df, k=2, bs=16, num_workers=0) for m in (safe, pickled))
    assert a.category_id.tolist() == b.category_id.tolist()

def test_killed_run_of_0_1_resumes(flat_dataset, tmp_path):
    run = tmp_path/'run'
    shutil.copytree(DATA/'killed_run_0.1', run)
    config = json.loads((run/'config.json').read_text())
    assert 'num_workers' in config['options']                                   # the option's name in 0.1
    config['options']['data'] = str(flat_dataset)                               # the same data, where this test has it
    (run/'config.json').write_text(json.dumps(config))
    result = run_command('herbarium-train', '--resume', run)
    assert result.returncode == 0, result.stderr[-3000:]
    history = pd.read_csv(run/'history.csv')
    assert history.epoch.tolist() == [0, 1, 2, 3] and history.train_loss.notna().all()
    resumed = json.loads((run/'config.json').read_text())['resumed']
    assert resumed[0]['epoch'] == 1 and resumed[0]['versions']['herbarium_fastai'] != '0.1.0'
    now, then = load_model(run).model_description.classes, load_model(DATA/'model_0.1').model_description.classes
    without_genus = lambda classes: [{k: v for k, v in c.items() if k != 'genus'} for c in classes]
    assert without_genus(now) == without_genus(then)                             # the same species, in the same order
    assert all(c['genus'] is None for c in then) and all(c['genus'] == c['species'].split()[0] for c in now)  # 0.3: 2021's genus
