"The commands, run as a user runs them: in subprocesses, on good and bad input"
import json, shutil, subprocess, sys, time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from conftest import GOOD, assert_clean_failure, run_command

COMMANDS = ['herbarium-synth', 'herbarium-train', 'herbarium-predict', 'herbarium-export', 'herbarium-check', 'herbarium-resize']

@pytest.mark.parametrize('command', COMMANDS)
def test_help(command):
    result = run_command(command, '--help')
    assert result.returncode == 0 and 'usage' in result.stdout
    assert 'default: True' not in result.stdout and 'default: False' not in result.stdout   # switches say what they do

def test_help_and_argument_errors_answer_at_once():
    "--help and a mistyped option take well under a second: the heavy libraries load only when a command runs"
    seconds = []
    for args in (['--help'], ['--epochs', 'many']):
        for _ in range(3):
            start = time.perf_counter()
            result = run_command('herbarium-train', *args)
            seconds.append(time.perf_counter() - start)
        assert result.returncode in (0, 2) and 'Traceback' not in result.stderr, result.stderr
    assert min(seconds[:3]) < 1 and min(seconds[3:]) < 1, seconds
    probe = ("import sys; from herbarium_fastai import cli\n"
             "for name in ('synth', 'train', 'predict', 'export', 'check', 'resize'):\n"
             "    try: getattr(cli, name + '_command').main(['--help'])\n"
             "    except SystemExit: pass\n"
             "sys.stderr.write(repr(sorted(m for m in ('torch', 'fastai', 'pandas', 'timm', 'pyarrow') if m in sys.modules)))")
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)
    assert result.stderr == '[]', result.stderr[-2000:]

def test_no_pretrained_help_says_the_default():
    text = ' '.join(run_command('herbarium-train', '--help').stdout.split())
    assert '--no-pretrained train from scratch (without it: timm\'s pretrained weights' in text, text

def test_predict_with_an_empty_model_path(flat_dataset, tmp_path):
    "`herbarium-predict \"\" DATA` names the missing model, not a model.pkl of the current folder"
    assert_clean_failure(run_command('herbarium-predict', '', flat_dataset, '--out', tmp_path/'s.csv'), 'no model given')
    assert_clean_failure(run_command('herbarium-predict', tmp_path, flat_dataset, '--out', tmp_path/'s.csv'), 'no model here')
    assert not (tmp_path/'s.csv').exists()

def test_trivial_dataset_end_to_end(flat_dataset, tmp_path):
    "From scratch via herbarium-train + herbarium-predict: ≥95% on the test images"
    meta = json.loads((flat_dataset/'train'/'metadata.json').read_text())
    category_ids = sorted(c['id'] for c in meta['categories'])
    assert category_ids != list(range(len(category_ids)))                   # not 0..N-1
    assert {a['id'] for a in meta['annotations']} != {a['image_id'] for a in meta['annotations']}
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, '--arch', 'test_resnet', '--no-pretrained', '--size', 32,
                         '--epochs', 5, '--bs', 16, '--lr-find-iters', 30, '--workers', 0)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Warning' not in result.stderr, result.stderr                  # no library warning the user cannot act on
    for name in ['model.safetensors', 'model.json', 'model.pkl', 'split.csv', 'lr_find.png', 'history.csv', 'metrics.json', 'config.json', 'loss.png', 'show_batch.png',
                 'family_scores.csv', 'worst_species.csv', 'confused_pairs.csv', 'summary.md', 'checkpoints/last.pth',
                 'checkpoints/best.pth']: assert (run/name).stat().st_size > 0, name
    assert list(pd.read_csv(run/'family_scores.csv').columns) == ['family', 'images', 'accuracy', 'macro_f1']
    assert len(pd.read_csv(run/'history.csv')) == 5 + 2                         # 5 epochs, then the default 2 rebalancing the classifier
    sub_file = tmp_path/'submission.csv'
    result = run_command('herbarium-predict', run, flat_dataset, '--out', sub_file, '--bs', 16, '--workers', 0)
    assert result.returncode == 0, result.stderr[-3000:]
    sub, labels = pd.read_csv(sub_file), pd.read_csv(flat_dataset/'test_labels.csv')
    assert list(sub.columns) == ['Id', 'Predicted'] and sorted(sub.Id) == sorted(labels.Id)
    both = labels.merge(sub, on='Id')
    accuracy = (both.category_id == both.Predicted).mean()
    assert accuracy >= 0.95, accuracy
    assert '"accuracy"' in result.stdout and '"macro_f1"' in result.stdout

def _write_bad_dataset(root, metadata_text):
    (root/'train').mkdir(parents=True)
    (root/'train'/'metadata.json').write_text(metadata_text)
    return root

def _variant(**changes):
    meta = json.loads(json.dumps(GOOD)); meta.update(changes)
    return json.dumps(meta)

BAD = {
    'not_json': ('{"images": [', 'metadata.json'),
    'missing_keys': (json.dumps(dict(images=GOOD['images'])), 'annotations'),
    'unknown_image': (_variant(annotations=[dict(id=1, image_id=99, category_id=5, institution_id=0)]), 'unknown image'),
    'unknown_category': (_variant(annotations=[dict(id=1, image_id=10, category_id=77, institution_id=0)]), 'unknown categor'),
}

@pytest.mark.parametrize('case', BAD)
def test_bad_metadata_fails_cleanly(case, tmp_path):
    text, word = BAD[case]
    data = _write_bad_dataset(tmp_path/'data', text)
    run = tmp_path/'run'
    result = run_command('herbarium-train', data, '--out', run, '--no-pretrained', '--epochs', 1)
    assert_clean_failure(result, str(data/'train'/'metadata.json'), word)
    assert not (run/'model.pkl').exists() and not run.exists()

def test_offline_pretrained_fails_cleanly(flat_dataset, tmp_path):
    "No network: one line that names --no-pretrained, and no model file"
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, '--epochs', 1, env=dict(HF_HUB_OFFLINE='1'))
    assert_clean_failure(result, 'pretrained', '--no-pretrained', '--weights')
    assert not (run/'model.pkl').exists()

def test_train_needs_data_or_demo(tmp_path):
    assert_clean_failure(run_command('herbarium-train', '--out', tmp_path/'run'), '--demo')

def test_missing_dataset_folder(tmp_path):
    assert_clean_failure(run_command('herbarium-train', tmp_path/'nowhere', '--no-pretrained'), 'nowhere')

def test_predict_missing_or_broken_model(flat_dataset, tmp_path):
    assert_clean_failure(run_command('herbarium-predict', tmp_path/'none.pkl', flat_dataset), 'none.pkl')
    broken = tmp_path/'broken.pkl'; broken.write_bytes(b'garbage')
    out = tmp_path/'submission.csv'
    assert_clean_failure(run_command('herbarium-predict', broken, flat_dataset, '--out', out, '--trust-pickle'), 'broken.pkl')
    (tmp_path/'model.json').write_text('{"format": "something else"}')
    (tmp_path/'model.safetensors').write_bytes(b'')
    assert_clean_failure(run_command('herbarium-predict', tmp_path, flat_dataset, '--out', out), 'model.json')
    assert not out.exists()

def test_synth_command_writes_kaggle_layout(tmp_path):
    dest = tmp_path/'synth'
    result = run_command('herbarium-synth', dest, '--species', 3, '--size', 48, '--workers', 0)
    assert result.returncode == 0, result.stderr
    for name in ['train/metadata.json', 'test/metadata.json', 'sample_submission.csv', 'test_labels.csv']:
        assert (dest/name).is_file()
    assert_clean_failure(run_command('herbarium-synth', dest, '--species', 3, '--size', 48, '--workers', 0), str(dest))

def test_predict_writes_darwin_core(flat_dataset, tmp_path):
    "--darwin-core: one UTF-8 CSV row per test image with Darwin Core's terms, checked by hand against the top-k CSV"
    run = tmp_path/'run'
    shutil.copytree(Path(__file__).parent/'data'/'model_0.1', run, ignore=shutil.ignore_patterns('*.pkl'))
    result = run_command('herbarium-predict', run, flat_dataset, '--out', tmp_path/'s.csv', '--top-k-csv', tmp_path/'top.csv', '--k', 3,
                         '--darwin-core', tmp_path/'dwc.csv', '--workers', 0)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Darwin Core: {tmp_path/'dwc.csv'}" in result.stdout
    core = pd.read_csv(tmp_path/'dwc.csv', encoding='utf-8', dtype=str, keep_default_na=False)
    assert list(core.columns) == ['catalogNumber', 'associatedMedia', 'kingdom', 'scientificName', 'taxonRank', 'genus', 'family', 'order',
                                  'identifiedBy', 'dateIdentified', 'identificationVerificationStatus', 'identificationRemarks']
    test = json.loads((flat_dataset/'test'/'metadata.json').read_text())['images']
    assert sorted(core.catalogNumber) == sorted(str(i['id']) for i in test)
    top = pd.read_csv(tmp_path/'top.csv', keep_default_na=False)
    image = test[0]
    row, best = core.set_index('catalogNumber').loc[str(image['id'])], top[top.image_id == image['id']].sort_values('position')
    assert (row.associatedMedia, row.kingdom) == (image['file_name'], 'Plantae')
    assert (row.taxonRank, row.scientificName) == (best.answer_rank.iloc[0], best.answer.iloc[0])
    if row.taxonRank == 'species': assert [row.genus, row.family, row.order] == [best.genus.iloc[0], best.family.iloc[0], best.order.iloc[0]]
    else: assert row[row.taxonRank] == row.scientificName
    assert row.identifiedBy.startswith('herbarium_fastai ') and 'machine identification' in row.identifiedBy
    assert 'model test_resnet' in row.identifiedBy                       # (a model of 0.1: no checksum recorded, and it says so)
    assert datetime.fromisoformat(row.dateIdentified).tzinfo is not None and row.identificationVerificationStatus == 'unverified'
    assert row.identificationRemarks == (f"probability {best.answer_probability.iloc[0]:.3f} at {row.taxonRank}; best species: "
                                         + '; '.join(f'{s} ({p:.3f})' for s, p in zip(best.species, best.probability)))
