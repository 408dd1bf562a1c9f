"""Worker restarts on a small set: does fastai's `persistent_workers=True` save them, and does lr_find in this process? One run, side by side.

    python bench/workers.py            # 2 workers, a 48-image set in batches of 16, lr_find's 100 steps + 3 epochs

fastai's `DataLoader.__iter__` builds a new torch iterator (`_MultiProcessingDataLoaderIter(self.fake_l)`) for every
epoch instead of asking torch's `DataLoader` for one, and torch keeps workers alive only through the `DataLoader` that
made them. Measured here: the time of lr_find's 100 steps (50 epochs of this 2-batch set) and of 3 epochs, for
`persistent_workers` False and True; and the time of the same lr_find loading in this process (`fake_l.no_multiproc()`)
instead of in worker processes.
"""
import argparse, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import psutil

def children(): return len(psutil.Process().children(recursive=True))

def measure(data, persistent, workers, bs):
    from fastai.vision.all import set_seed
    from herbarium_fastai.data import herbarium_dataloaders
    from herbarium_fastai.learner import herbarium_learner
    from herbarium_fastai.metadata import load_metadata
    set_seed(0)
    dls = herbarium_dataloaders(load_metadata(data/'train', cache=False), size=32, bs=bs, num_workers=workers,
                                persistent_workers=persistent)
    learn = herbarium_learner(dls, 'test_resnet', pretrained=False, path=data.parent/'run')
    with learn.no_bar(), learn.no_logging():
        start = time.perf_counter(); learn.lr_find(num_it=100, show_plot=False); lr_find = time.perf_counter() - start
        start = time.perf_counter(); learn.fit_one_cycle(3, 1e-3); fit = time.perf_counter() - start
        with dls.train.fake_l.no_multiproc():
            start = time.perf_counter(); learn.lr_find(num_it=100, show_plot=False); in_process = time.perf_counter() - start
    return dict(lr_find=lr_find, fit=fit, in_process=in_process, batches=len(dls.train), alive=children())

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--workers', type=int, default=2); p.add_argument('--bs', type=int, default=16)
    args = p.parse_args()
    from herbarium_fastai.synth import make_synthetic_dataset
    data = Path(tempfile.mkdtemp())/'data'
    make_synthetic_dataset(data, species=6, seed=0, size=48, style='flat', min_per_species=8, max_per_species=8, workers=0)
    results = {persistent: measure(data, persistent, args.workers, args.bs) for persistent in (False, True)}
    print(f"{args.workers} workers, {results[False]['batches']} training batches of {args.bs}; seconds (ratio persistent / not)")
    for k in ('lr_find', 'fit'):
        print(f"{k:<8} persistent_workers=False {results[False][k]:7.1f}   True {results[True][k]:7.1f}   ratio {results[True][k] / results[False][k]:.2f}")
    r = results[False]
    print(f"lr_find  with {args.workers} workers {r['lr_find']:7.1f}   in this process {r['in_process']:7.1f}   ratio {r['in_process'] / r['lr_find']:.2f}")
    print(f"worker processes alive afterwards: False {results[False]['alive']}, True {results[True]['alive']}")

if __name__ == '__main__': main()
