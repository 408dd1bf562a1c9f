#!/usr/bin/env python3
"""The steps after the data, at the competition's class count: 64,500 species with an H2021-shaped tail.

A training table of 64,500 species (3 or more sheets each, a power-law tail; the sheets are a pool of small JPEGs, so
no image is written per row) is split as a run splits it, and a timm `test_resnet` with a 64,500-way head (random
weights: what it predicts does not matter here, only that its predictions fall on species the validation rows do not
name) goes through every step that follows training: the validation pass, the rank thresholds and scores, the report,
the safe model files, the top-k CSV and the Darwin Core file of a test set, and the server's `/identify`. Prints each
step's seconds and peak memory (the process's resident set, sampled every 5 ms: its peak during the step, and how far
above the step's start), then whether any name in the CSVs is missing (`nan`), which fails the run.

    python bench/scale.py                 # 64,500 species, 2,000 test sheets
    python bench/scale.py --species 5000  # a quick try
"""
import argparse, os, resource, sys, tempfile, threading, time
from pathlib import Path

import numpy as np
import pandas as pd

def resident_mb():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

class PeakMemory:
    "Sample the resident set every `every` seconds while in the `with` block: `peak` and `start` in MB"
    def __init__(self, every=0.005): self.every = every
    def __enter__(self):
        self.start = self.peak = resident_mb(); self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True); self.thread.start()
        self.began = time.perf_counter(); return self
    def _sample(self):
        while not self.done.wait(self.every): self.peak = max(self.peak, resident_mb())
    def __exit__(self, *_):
        self.seconds = time.perf_counter() - self.began
        self.done.set(); self.thread.join(); self.peak = max(self.peak, resident_mb())

def pool_images(folder, n=64, size=48):
    "`n` small JPEG sheets that every row of the tables points at"
    from PIL import Image
    rng = np.random.default_rng(0)
    (folder/'pool').mkdir(parents=True)
    for i in range(n): Image.fromarray(rng.integers(0, 255, (size * 3 // 2, size, 3), dtype=np.uint8)).save(folder/'pool'/f'{i}.jpg', quality=85)
    return [f'pool/{i}.jpg' for i in range(n)]

def tables(folder, species, test_images, max_per_species, tail):
    "The training table (Kaggle 2021's columns, H2021-shaped counts) and a test table, their files from the pool"
    from herbarium_fastai.synth import make_taxonomy, species_counts
    taxa, files = make_taxonomy(species, 0), pool_images(folder)
    counts = species_counts(species, 0, 3, max_per_species, tail)
    rows = np.repeat(np.arange(species), counts)
    names = pd.DataFrame([dict(category_id=t['id'], species=t['name'], genus=t['genus'], family=t['family'], order=t['order']) for t in taxa])
    train = names.iloc[rows].reset_index(drop=True)
    train.insert(0, 'image_id', np.arange(len(train)))
    train.insert(1, 'file_name', [files[i % len(files)] for i in range(len(train))])
    test = pd.DataFrame(dict(image_id=np.arange(test_images), file_name=[files[i % len(files)] for i in range(test_images)]))
    for t in (train, test): t.attrs['root'] = str(folder)
    return train, test

def steps(folder, train, test, bs):
    "Every step after the data, each measured: {step: PeakMemory}"
    from fastapi.testclient import TestClient
    from herbarium_fastai.data import herbarium_dataloaders
    from herbarium_fastai.inference import (darwin_core_table, load_model, predict_metadata, save_safe_model, top_k_table,
                                            validation_pass, write_darwin_core, write_submission)
    from herbarium_fastai.learner import herbarium_learner
    from herbarium_fastai.report import write_report
    from herbarium_fastai.serve import create_app
    from herbarium_fastai.taxonomy import choose_rank_thresholds, taxonomy_tree, validation_rank_scores
    run, measured = folder/'run', {}
    with PeakMemory() as measured[f'DataLoaders and the {len(set(train.category_id)):,}-way learner']:
        dls = herbarium_dataloaders(train, size=32, bs=bs, arch='test_resnet', num_workers=0)
        learn = herbarium_learner(dls, 'test_resnet', pretrained=False, path=run)
    print(f"{len(train):,} training rows of {train.category_id.nunique():,} species; validation: {len(dls.valid_ds):,} images of "
          f"{dls.valid_ds.items.category_id.nunique():,} species", flush=True)
    with PeakMemory() as measured['validation pass']: valid = validation_pass(learn)
    with PeakMemory() as measured['rank thresholds and scores']:
        taxonomy = dict(validation_rank_scores(valid, taxonomy_tree(learn.model_description.classes)),
                        thresholds=choose_rank_thresholds(valid.roll_up, valid.truth))
        learn.model_description.rank_thresholds = taxonomy['thresholds']
    with PeakMemory() as measured['report (CSVs, plots, summary.md)']: write_report(learn, run, valid=valid, taxonomy=taxonomy)
    with PeakMemory() as measured['safe model files, saved and loaded']:
        save_safe_model(learn, run); model = load_model(run)
    with PeakMemory() as measured[f'top-5 CSV of {len(test):,} test sheets']:
        predictions = predict_metadata(model, test, k=5, bs=bs, num_workers=0)
        write_submission(top_k_table(predictions, model), folder/'top5.csv')
    with PeakMemory() as measured['Darwin Core file']:
        write_darwin_core(darwin_core_table(predictions, model, media=test.file_name), folder/'darwin_core.csv')
    with PeakMemory() as measured['server: the app, then /identify of 8 sheets']:
        with TestClient(create_app(run)) as client:
            files = [('images', (f'{i}.jpg', (folder/'pool'/f'{i}.jpg').read_bytes(), 'image/jpeg')) for i in range(8)]
            answer = client.post('/identify?k=5&heatmap=true', files=files)
            assert answer.status_code == 200, answer.text
    return measured

def unnamed(folder)->dict:
    "Per CSV, the name columns with a missing (nan) value"
    columns = {'run/confused_pairs.csv': ('species', 'predicted_species'), 'run/worst_species.csv': ('species', 'family'),
               'top5.csv': ('species', 'family'), 'darwin_core.csv': ('scientificName',)}
    found = {}
    for name, names in columns.items():
        table = pd.read_csv(folder/name)
        missing = [c for c in names if c in table and table[c].isna().any()]
        if missing or not len(table): found[name] = missing or 'empty'
    return found

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--species', type=int, default=64500)
    parser.add_argument('--test-images', type=int, default=2000)
    parser.add_argument('--max-per-species', type=int, default=2000, help='sheets of the commonest species (the tail falls from it)')
    parser.add_argument('--tail', type=float, default=0.8, help="the tail's power-law exponent")
    parser.add_argument('--bs', type=int, default=64)
    args = parser.parse_args(argv)
    import torch; torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        with PeakMemory() as made: train, test = tables(folder, args.species, args.test_images, args.max_per_species, args.tail)
        measured = {'the tables (in memory)': made, **steps(folder, train, test, args.bs)}
        print(f"\n{'step':48} {'seconds':>8} {'peak MB':>8} {'+MB':>7}")
        for step, m in measured.items(): print(f"{step:48} {m.seconds:8.1f} {m.peak:8.0f} {m.peak - m.start:7.0f}")
        print(f"process peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        missing = unnamed(folder)
    print('names: ' + ('every species named in the CSVs' if not missing else f'MISSING {missing}'))
    return 1 if missing else 0

if __name__ == '__main__': sys.exit(main())
