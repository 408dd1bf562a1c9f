"""Rank heads or not: fine-tune the packaged ImageNet EfficientNet-Lite0 with and without genus/family/order heads
on a synthetic long-tailed herbarium whose looks follow the taxonomy, over seeds, and compare on its test split.

    python bench/taxonomy.py                          # 3 seeds, 60 species in 10 families, 1 frozen + 4 epochs at 128 px
    python bench/taxonomy.py --seeds 1 --epochs 1     # a smoke run

The data: `make_synthetic_dataset(species=60, min_per_species=3, max_per_species=10, test_per_species=4)`: species of
a family share leaf shape, arrangement and colour, families of an order share hue band and venation (02_synth).
Both recipes are `herbarium_fastai.runs.train_run_folder(..., weights='efficientnet-lite0')` with the same epochs,
size, batch and seed; the second adds `taxonomy_heads=True` (loss weight `--weight`).
Printed, mean ± sd over the seeds: test species macro F1, family accuracy (from the roll-up of the species'
probabilities, and for the heads model also from its family head and from the mean of both), and the mistakes'
severity (of the wrong species, the share with the right genus and family); then the difference.
"""
import argparse, json, statistics, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, default=3); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--size', type=int, default=128); p.add_argument('--bs', type=int, default=32)
    p.add_argument('--species', type=int, default=60); p.add_argument('--weight', type=float, default=0.5)
    p.add_argument('--out', default=None, help='JSON of every run')
    return p.parse_args()

def test_scores(run, data):
    "Species macro F1, family accuracy by each rank source, and mistake severity on the test split"
    from herbarium_fastai.inference import load_safe_model, predict_metadata
    from herbarium_fastai.metadata import load_metadata
    from herbarium_fastai.taxonomy import taxonomy_tree
    learn = load_safe_model(run, cpu=True)
    classes = learn.model_description.classes
    test = load_metadata(data/'test', cache=False)
    labels = pd.read_csv(data/'test_labels.csv').set_index('Id').category_id.loc[test.image_id].to_numpy()
    by_id = {c['category_id']: c for c in classes}
    scores = {}
    for source in ('roll-up', 'heads', 'mean') if learn.model_description.rank_heads else ('roll-up',):
        p = predict_metadata(learn, test, k=1, bs=64, num_workers=0, rank_source=source)
        scores[f'family acc ({source})'] = float(np.mean(p.top_family.to_numpy() == np.array([by_id[i]['family'] for i in labels])))
    predicted = p.category_id.to_numpy()
    wrong = predicted != labels
    scores['species macro F1'] = float(f1_score(labels, predicted, average='macro'))
    for rank in ('genus', 'family'):
        scores[f'wrong: right {rank}'] = float(np.mean([by_id[a][rank] == by_id[b][rank] for a, b in zip(labels[wrong], predicted[wrong])]))
    assert set(taxonomy_tree(classes)) == {'genus', 'family', 'order'}
    return scores

def main():
    args = parse()
    from herbarium_fastai.runs import train_run_folder
    from herbarium_fastai.synth import make_synthetic_dataset
    root = Path(tempfile.mkdtemp(prefix='herbarium-taxonomy-'))
    data = root/'data'
    summary = make_synthetic_dataset(data, species=args.species, seed=11, size=args.size, min_per_species=3, max_per_species=10,
                                     test_per_species=4, workers=2)
    print(f"data: {args.species} species, {summary['families']} families, {summary['orders']} orders", file=sys.stderr)
    rows = []
    for seed in range(args.seeds):
        for heads in (False, True):
            run, start = root/f'{"heads" if heads else "plain"}-{seed}', time.perf_counter()
            train_run_folder(data, run, weights='efficientnet-lite0', size=args.size, epochs=args.epochs, bs=args.bs, seed=seed,
                             lr_find_iters=30, workers=0, report=False, taxonomy_heads=heads, rank_loss_weight=args.weight,
                             recipe='quick')  # (as measured in 0.3: no rebalancing)
            rows.append(dict(recipe='with rank heads' if heads else 'species only', seed=seed,
                             seconds=time.perf_counter() - start, **test_scores(run, data)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print(f'\nTest split, {args.seeds} seeds, lite0 fine-tuned: 1 frozen + {args.epochs} epochs at {args.size} px, batch {args.bs}, '
          f'rank loss weight {args.weight}, CPU')
    columns = [c for c in table.columns if c not in ('recipe', 'seed', 'seconds')]
    cell = lambda v: f'{v.mean():.3f} ± {statistics.stdev(v) if len(v) > 1 else 0.:.3f}' if v.notna().all() else '-'
    print(f"{'':<24}" + ''.join(f'{r:>22}' for r in table.recipe.unique()) + f"{'difference':>14}")
    for c in columns + ['seconds']:
        values = [table[table.recipe == r][c] for r in table.recipe.unique()]
        diff = f'{values[1].mean() - values[0].mean():+.3f}' if values[0].notna().all() and values[1].notna().all() else ''
        print(f'{c:<24}' + ''.join(f'{cell(v):>22}' for v in values) + f'{diff:>14}')
    if args.out: Path(args.out).write_text(table.to_json(orient='records', indent=1))

if __name__ == '__main__': main()
