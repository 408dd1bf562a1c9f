"The taxonomy through the commands: rank heads trained, saved and used; per-rank columns and scores"
import json

import pandas as pd

from conftest import run_command

RANK_COLUMNS = ['top_species', 'top_species_probability', 'top_genus', 'top_genus_probability', 'top_family',
                'top_family_probability', 'top_order', 'top_order_probability', 'answer_rank', 'answer', 'answer_probability']

def test_taxonomy_heads_train_and_predict(flat_dataset, tmp_path):
    "--taxonomy-heads: heads in model.json, scores at every rank in metrics.json and summary.md, per-rank columns in the top-k CSV"
    run = tmp_path/'run'
    result = run_command('herbarium-train', flat_dataset, '--out', run, '--arch', 'test_resnet', '--no-pretrained', '--size', 32,
                         '--epochs', 3, '--bs', 16, '--lr', 3e-3, '--workers', 0, '--taxonomy-heads', '--rank-loss-weight', 0.3)
    assert result.returncode == 0, result.stderr[-3000:]
    description = json.loads((run/'model.json').read_text())
    assert description['rank_heads'] == dict(weight=0.3)
    assert set(description['rank_thresholds']) == {'species', 'genus', 'family', 'order'}
    taxonomy = json.loads((run/'metrics.json').read_text())['taxonomy']
    assert set(taxonomy['ranks']) == {'species', 'genus', 'family', 'order'}
    assert all(0 <= s['macro_f1'] <= 1 for s in taxonomy['ranks'].values())
    assert set(taxonomy['mistakes']) == {'right_genus', 'right_family', 'right_order'}
    assert set(taxonomy['heads']) == set(taxonomy['roll_up']) == {'genus', 'family', 'order'}
    summary = (run/'summary.md').read_text()
    assert 'Scores at every rank' in summary and 'heads_accuracy' in summary and 'wrong species predictions' in summary
    tables = {}
    for source in ('roll-up', 'heads'):
        top_k = tmp_path/f'top_{source}.csv'
        result = run_command('herbarium-predict', run, flat_dataset, '--out', tmp_path/'sub.csv', '--top-k-csv', top_k, '--k', 2,
                             '--bs', 16, '--workers', 0, '--rank-source', source)
        assert result.returncode == 0, result.stderr[-3000:]
        tables[source] = table = pd.read_csv(top_k)
        assert [c for c in RANK_COLUMNS if c in table.columns] == RANK_COLUMNS
        assert set(table.answer_rank) <= {'species', 'genus', 'family', 'order'}
        first = table.groupby('image_id').first()
        assert (first.top_species == first.species).all()  # position 1's species is the image's best species
    assert not tables['roll-up'].top_genus_probability.equals(tables['heads'].top_genus_probability)

def test_bad_rank_source_is_refused(flat_dataset, tmp_path):
    "A rank source that does not exist: one line, exit 1, no submission"
    from herbarium_fastai.data import herbarium_dataloaders
    from herbarium_fastai.inference import save_safe_model
    from herbarium_fastai.learner import herbarium_learner
    from herbarium_fastai.metadata import load_metadata
    dls = herbarium_dataloaders(load_metadata(flat_dataset/'train'), size=32, bs=8, num_workers=0)
    save_safe_model(herbarium_learner(dls, 'test_resnet', pretrained=False), tmp_path/'model')
    result = run_command('herbarium-predict', tmp_path/'model', flat_dataset, '--out', tmp_path/'sub.csv', '--rank-source', 'vote',
                         '--workers', 0)
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert "rank source 'vote'" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path/'sub.csv').exists()
