"""A whole training epoch on this CPU: the kit (as `herbarium-train` trains) against plain fastai at the same settings,
and where the difference goes. The sibling of bench/gpu.py for a machine without a GPU.

    python bench/epoch.py                     # resnet18 at 64 px, ~1,000 sheets presized to 96 px, 4 epochs a fit
    python bench/epoch.py --sheet-px 1000     # from 1000-px originals instead (Kaggle's sheets)
    python bench/epoch.py --size 32           # as the issue's first figure

Both train the same timm `resnet18` from scratch (fastai's head, `vision_learner`), batch 64, fastai's Adam,
`fit_one_cycle` at one learning rate (the same for both: lr_find is timed on its own), DataLoader workers as each sets
them (neither sets any: fastai's default, every core up to 16):
- plain fastai: `ImageDataLoaders.from_df(..., item_tfms=Resize(1.5 * size), batch_tfms=aug_transforms(size=size) +
  Normalize)`, random 20% validation, `vision_learner(dls, 'resnet18', metrics=accuracy)`, `fit_one_cycle`;
- kit: `herbarium_dataloaders` + `herbarium_learner` (accuracy and macro F1) + `train_learner` (history.csv, a
  checkpoint after every epoch, the CPU run's estimate), as `herbarium-train` runs them;
- the kit with one of its differences taken out, to see what each costs: without checkpoints (`kit_no_checkpoints`),
  checkpointing after every epoch as 0.3 did (`kit_every_epoch`, `--checkpoint-every 0`), without macro F1
  (`kit_no_f1`).
Each fit runs `--epochs` epochs; fits take turns, `--rounds` rounds, so that the machine's other load falls on all
alike. An epoch is timed from its start to the end of its last callback (training, validation, checkpoint and logs):
wall seconds and CPU seconds (this process and its DataLoader workers). A fit's throughput is its training images
over the wall time of all its epochs but the first (warm-up), checkpoints included; the best fit of the rounds counts.
`--lr-find` also times lr_find (100 steps, as both run it) once for each.
"""
import argparse, os, resource, statistics, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastai.callback.core import Callback
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fastai.vision.all import ImageDataLoaders, Normalize, Resize, aug_transforms, vision_learner

from herbarium_fastai.data import herbarium_dataloaders
from herbarium_fastai.model_file import timm_normalization
from herbarium_fastai.learner import herbarium_learner, train_learner
from herbarium_fastai.metadata import image_paths, load_metadata
from herbarium_fastai.synth import make_synthetic_dataset

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='resnet18'); p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--images', type=int, default=1000)
    p.add_argument('--sheet-px', type=int, default=None, help='long side of the sheets; default 1.5 x size (presized)')
    p.add_argument('--epochs', type=int, default=4); p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--lr-find', action='store_true', help='also time lr_find once for each')
    p.add_argument('--lr', type=float, default=2e-3); p.add_argument('--data', default=None, help='folder kept between runs')
    p.add_argument('--variants', default='plain,kit,kit_every_epoch,kit_no_checkpoints')
    return p.parse_args()

def cpu_seconds():
    "CPU seconds of this process and of its children that have finished (the DataLoader workers of passes done)"
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime

class EpochClock(Callback):
    "Wall and CPU seconds of each epoch, from its start to the end of its last callback"
    order = 1_000  # after every other callback's after_epoch (checkpoints, logs)
    def __init__(self): self.epochs = []
    def before_epoch(self): self.start = (time.perf_counter(), cpu_seconds())
    def after_epoch(self): self.epochs.append((time.perf_counter() - self.start[0], cpu_seconds() - self.start[1]))

def plain_fastai(train, args, out, clock):
    dls = ImageDataLoaders.from_df(train, fn_col='path', label_col='category_id', valid_pct=0.2, seed=0, path='/', bs=args.bs,
                                   item_tfms=Resize(int(args.size * 1.5)),
                                   batch_tfms=[*aug_transforms(size=args.size), Normalize.from_stats(*timm_normalization(args.arch))])
    learn = vision_learner(dls, args.arch, pretrained=False, metrics=accuracy, path=out)
    return learn, lambda: learn.fit_one_cycle(args.epochs, args.lr, cbs=[clock])

def kit(train, args, out, clock, checkpoints=True, metrics=None, **kwargs):
    dls = herbarium_dataloaders(train, size=args.size, bs=args.bs, arch=args.arch)
    learn = herbarium_learner(dls, args.arch, pretrained=False, path=out, metrics=metrics)
    return learn, lambda: train_learner(learn, epochs=args.epochs, lr=args.lr, out=out, checkpoints=checkpoints, cbs=[clock], **kwargs)

VARIANTS = dict(plain=('plain fastai', plain_fastai), kit=('kit (as herbarium-train)', kit),
                kit_every_epoch=('kit, a checkpoint every epoch', lambda *a: kit(*a, checkpoint_every=0)),
                kit_no_checkpoints=('kit, no checkpoints', lambda *a: kit(*a, checkpoints=False)),
                kit_no_f1=('kit, accuracy only (no macro F1)', lambda *a: kit(*a, metrics=[accuracy])))

def main():
    args = parse()
    root = Path(args.data or tempfile.mkdtemp(prefix='herbarium-epoch-bench-'))
    sheet_px = args.sheet_px or int(args.size * 1.5)
    data = root/f'sheets{sheet_px}'
    if not (data/'train'/'metadata.json').exists():
        made = make_synthetic_dataset(data, species=50, size=sheet_px, min_per_species=args.images // 50, max_per_species=args.images // 50,
                                      test_per_species=1, supersample=1, workers=os.cpu_count())
        print(f"wrote {made['train_images']} sheets of {sheet_px} px in {made['seconds']:.0f} s")
    train = load_metadata(data/'train').assign(path=lambda d: image_paths(d))
    keys = args.variants.split(',')
    print(f"{args.arch} at {args.size} px from {sheet_px}-px sheets, batch {args.bs}, {len(train)} images (~80% training), "
          f"{args.epochs} epochs a fit, {args.rounds} rounds; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores, DataLoader workers: fastai's default; load average {os.getloadavg()[0]:.1f}")
    epochs, lr_finds = {k: [] for k in keys}, {}
    for r in range(args.rounds):
        for k in keys:
            set_seed(0)
            clock = EpochClock()
            learn, fit = VARIANTS[k][1](train, args, root/f'run-{k}', clock)
            if r == 0 and args.lr_find:
                start = time.perf_counter()
                with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=100, show_plot=False)
                lr_finds[k] = time.perf_counter() - start
            with learn.no_bar(), learn.no_logging(): fit()
            n = len(learn.dls.train) * learn.dls.bs
            timed = clock.epochs[1:]
            epochs[k].append((n * len(timed) / sum(w for w, _ in timed), n * len(timed) / sum(c for _, c in timed), statistics.median(w for w, _ in timed)))
            print(f"  round {r + 1} {VARIANTS[k][0]}: epochs {', '.join(f'{w:.1f}' for w, _ in clock.epochs)} s", file=sys.stderr, flush=True)
    base = max(e[0] for e in epochs[keys[0]])
    print(f"\n{'':36}{'images/s':>9}{'vs ' + VARIANTS[keys[0]][0]:>18}{'img/CPU-s':>11}{'median s/epoch':>16}" + (f"{'lr_find s':>11}" if lr_finds else ''))
    for k in keys:
        best = max(epochs[k])
        print(f"{VARIANTS[k][0]:36}{best[0]:9.1f}{best[0] / base:18.2f}{best[1]:11.1f}{statistics.median(e[2] for e in epochs[k]):16.1f}"
              + (f'{lr_finds[k]:11.1f}' if lr_finds else ''))
    print(f"\n(the best fit of each: its epochs but the first, checkpoints included; load average at the end {os.getloadavg()[0]:.1f})")

if __name__ == '__main__': main()
