"""Images per CPU-second of the DataLoader's own work (decode, item transforms, collation), ours against plain fastai
and against the kit's 0.3 pipeline, for training and for herbarium-predict; and where the time of one image goes.

    python bench/loader.py                    # 256 sheets of 667 x 1000 px, 5 rounds (about 3 minutes on 2 cores)
    python bench/loader.py --images 64 --rounds 2   # a quick try

1. Writes `--images` synthetic 1000-px sheets (`make_synthetic_dataset(size=1000)`: 667 x 1000 JPEGs, quality 90,
   ~100 KiB, like Kaggle 2021's) and a `herbarium-resize` copy of them (384 px, `resize_dataset`).
2. Training loaders (224 px, presize 336, batches of 64), each a fastai DataLoader with its batch transforms
   (`IntToFloatTensor`, augmentation, `Normalize`) taken out: they run on the GPU, not on the cores measured here.
   - plain fastai: `ImageDataLoaders.from_df(..., item_tfms=Resize(336))`, as its tutorials write it;
   - kit 0.3: its DataBlock reproduced here (`PILImage.create`, then fastai's `Resize(336, method='squish')`);
   - kit now: `dataloaders_from_items` as `herbarium-train` builds it (`images.ReducedImage`: reduced-scale decode);
     also with no slack (`slack=0`: a 667-px side is 2 px short of 336 at 1/2 scale, so decoded whole);
   - kit now, reading the `herbarium-resize` copy instead of the originals.
3. Prediction loaders (`test_dl` of the validation transforms at 224 px, as `herbarium-predict` uses them): kit 0.3
   (whole image, squished to the 336-px presize: 0.3 validated at the presize) against the kit now (reduced decode,
   squished to the presize as in training).
4. Each loader runs one pass over the images per round, all loaders in turn, `--rounds` rounds; the best pass counts.
   Main table: in this process (`num_workers=0`) with one torch thread, as in a DataLoader worker: the work of one
   core, measured as CPU time (`time.process_time`), so that other jobs on a shared machine change it little. Second
   table (`--workers`): the same loaders with worker processes; CPU time of this process plus that of the workers
   (which exit at the end of each pass: `RUSAGE_CHILDREN`), so the hand-off (shared memory, unpickling) is in it.
5. Where one image's time goes (one core, the same images): each step of the kit 0.3 and of the kit now timed alone,
   and the alternatives measured for each step.
"""
import argparse, os, resource, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastai.data.block import CategoryBlock, DataBlock, TransformBlock
from fastai.data.load import fa_collate
from fastai.data.transforms import ColReader, ColSplitter, IntToFloatTensor, Normalize
from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
from fastai.vision.core import PILImage, imagenet_stats
from fastai.vision.data import ImageDataLoaders
from fasttransform import Pipeline

from herbarium_fastai.data import dataloaders_from_items, resize_dataset, with_split
from herbarium_fastai.images import ReducedImage, open_reduced, squish
from herbarium_fastai.metadata import load_metadata
from herbarium_fastai.synth import make_synthetic_dataset

SIZE, PRESIZE, BS = 224, 336, 64

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=256, help='training sheets to write (at least 200 for the issue)')
    p.add_argument('--rounds', type=int, default=5); p.add_argument('--workers', type=int, default=2)
    p.add_argument('--data', default=None, help='folder for the sheets (kept between runs); default a temp folder')
    return p.parse_args()

def image_source_03(item): return item['path'] if isinstance(item, (pd.Series, dict)) else item

def open_image_03(item):
    try: return PILImage.create(item)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e: raise ValueError(f'{item}: {e}') from None

def kit_03_block():
    "The kit 0.3's DataBlock, as it was: `PILImage.create` (with its one-line errors), fastai's `Resize` squish to the presize"
    return DataBlock(blocks=(TransformBlock(type_tfms=open_image_03, batch_tfms=IntToFloatTensor), CategoryBlock()),
                     get_x=image_source_03, get_y=ColReader('category_id'), splitter=ColSplitter('is_valid'),
                     item_tfms=Resize(PRESIZE, method=ResizeMethod.Squish),
                     batch_tfms=[*aug_transforms(size=SIZE), Normalize.from_stats(*imagenet_stats)])

def loaders(items, copy_items, workers):
    "name -> a DataLoader of each pipeline (batch transforms still in: taken out by `cpu_rate`)"
    kw = dict(bs=BS, num_workers=workers)
    plain = ImageDataLoaders.from_df(items, fn_col='path', label_col='category_id', valid_col='is_valid', path='/',
                                     item_tfms=Resize(PRESIZE), batch_tfms=[*aug_transforms(size=SIZE), Normalize.from_stats(*imagenet_stats)], **kw)
    old = kit_03_block().dataloaders(items, **kw)
    now = dataloaders_from_items(items, size=SIZE, **kw)
    strict = dataloaders_from_items(items, size=SIZE, **kw)
    opener = strict.train.dataset.tls[0].tfms.fs[-1]
    assert isinstance(opener, ReducedImage); opener.slack = 0  # the same, asking reduced decodes for no shortfall at all
    copy = dataloaders_from_items(copy_items, size=SIZE, **kw)
    test = items.assign(is_valid=True)
    return {'train: plain fastai (Resize(336))': plain.train, 'train: kit 0.3 (full decode, Resize squish)': old.train,
            'train: kit now (reduced decode)': now.train, 'train: kit now, no slack (slack=0)': strict.train,
            'train: kit now, herbarium-resize copy': copy.train,
            'predict: kit 0.3 (full decode, 336 presize)': old.test_dl(test, **kw), 'predict: kit now (reduced, 336 presize)': now.test_dl(test, **kw)}

def _children_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

def cpu_pass(dl):
    "One pass of `dl` without its batch transforms: (images, CPU seconds of this process, of its worker processes)"
    dl.after_batch, n = Pipeline([]), 0
    own, kids = time.process_time(), _children_seconds()
    for xb, *_ in dl: n += len(xb)
    return n, time.process_time() - own, _children_seconds() - kids  # (fastai's workers exit at the end of the pass)

def measure(items, copy_items, workers, rounds):
    "name -> (best, median images per CPU-second, ms of this process per image in the best pass), the loaders taking turns"
    dls = loaders(items, copy_items, workers)
    passes = {k: [] for k in dls}
    for _ in range(rounds):
        for k, dl in dls.items(): passes[k].append(cpu_pass(dl))
    rates = {k: [n / (own + kids) for n, own, kids in v] for k, v in passes.items()}
    return {k: (max(r), float(np.median(r))) for k, r in rates.items()}

def measure_workers(items, copy_items, workers, rounds, longer=4):
    "name -> (images per CPU-second once the workers run, CPU seconds to start them, ms of this process per image)"
    # fastai starts its workers again every pass (fork, copy-on-write of this process): from a pass over the items and
    # one over `longer` times as many, the steady rate (the difference) and the start (the rest), best of `rounds`
    many = lambda d: pd.concat([d[~d.is_valid]] * longer + [d[d.is_valid]], ignore_index=True)
    short, long = loaders(items, copy_items, workers), loaders(many(items), many(copy_items), workers)
    passes = {k: ([], []) for k in short}
    for _ in range(rounds):
        for k in short:
            for dls, kept in zip((short, long), passes[k]): kept.append(cpu_pass(dls[k]))
    results = {}
    for k, (a, b) in passes.items():
        (n1, own1, kids1), (n2, own2, kids2) = (min(p, key=lambda r: (r[1] + r[2]) / r[0]) for p in (a, b))
        rate = (n2 - n1) / (own2 + kids2 - own1 - kids1)
        results[k] = (rate, own1 + kids1 - n1 / rate, (own2 - own1) / (n2 - n1) * 1000)
    return results

def print_rates(title, rates, columns=('best', 'median')):
    print(f"\n{title}\n{'':46}{'vs plain':>10}{'vs 0.3':>8}{columns[0]:>9}{columns[1]:>12}" + (f'{columns[2]:>14}' if len(columns) > 2 else ''))
    plain, old = rates['train: plain fastai (Resize(336))'][0], rates['train: kit 0.3 (full decode, Resize squish)'][0]
    old_predict = rates['predict: kit 0.3 (full decode, 336 presize)'][0]
    for k, (rate, *more) in rates.items():
        base = old_predict if k.startswith('predict') else old
        versus_plain = f'{rate / plain:10.2f}' if k.startswith('train') else f"{'':10}"
        print(f"{k:46}{versus_plain}{rate / base:8.2f}{rate:9.1f}{more[0]:12.2f}" + (f'{more[1]:14.2f}' if len(more) > 1 else ''))

def step_times(paths, repeat=3):
    "ms per image (best of `repeat` passes, one core) of each step of the two pipelines and of the alternatives"
    def ms(fn, xs):
        passes = []
        for _ in range(repeat):
            start = time.process_time()
            for x in xs: fn(x)
            passes.append(time.process_time() - start)
        return min(passes) / len(xs) * 1000
    whole = [PILImage.create(p) for p in paths]
    drafted = [open_reduced(p, PRESIZE) for p in paths]
    resize = Resize(PRESIZE, method=ResizeMethod.Squish)
    resized = [resize(im, split_idx=0) for im in whole]
    tensors = [squish(im, PRESIZE) for im in drafted]
    as_tensor = lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1)
    torch_resize = lambda im: F.interpolate(as_tensor(im)[None], (PRESIZE, PRESIZE), mode='bilinear', antialias=True)
    steps = [('decode: PILImage.create (whole, 667 x 1000)', lambda p: PILImage.create(p), paths),
             ('decode: open_reduced (1/2 scale, 334 x 500)', lambda p: open_reduced(p, PRESIZE), paths),
             ('decode: whole + Image.reduce(2) (alternative)', lambda p: Image.open(p).reduce(2), paths),
             ('resize: fastai Resize squish on the whole image', lambda im: resize(im, split_idx=0), whole),
             ('resize: Pillow bilinear, whole image (alternative)', lambda im: im.resize((PRESIZE, PRESIZE), Image.BILINEAR), whole),
             ('resize: Pillow bilinear, reduced image (alternative)', lambda im: im.resize((PRESIZE, PRESIZE), Image.BILINEAR), drafted),
             ('resize: torch bilinear, whole image (alternative)', torch_resize, whole),
             ('resize+tensor: squish (torch), reduced image', lambda im: squish(im, PRESIZE), drafted),
             ('tensor: fastai ToTensor of a 336-px PIL image', lambda im: as_tensor(im).contiguous(), resized)]
    rows = [(name, ms(fn, xs)) for name, fn, xs in steps]
    batches = [tensors[i:i + BS] for i in range(0, len(tensors) - BS + 1, BS)]
    collate = lambda b: fa_collate([(x, torch.tensor(0)) for x in b])
    rows.append(('collate: fa_collate of 64 (3 x 336 x 336)', ms(collate, batches) / BS))
    def shared(b):  # what torch's default_collate does in a worker: the batch written into new shared memory, for the hand-off
        out = b[0].new(b[0]._typed_storage()._new_shared(sum(x.numel() for x in b))).resize_(len(b), *b[0].shape)
        return torch.stack(b, 0, out=out)
    rows.append(('collate in a worker: into new shared memory', ms(shared, [[x.as_subclass(torch.Tensor) for x in b] for b in batches]) / BS))
    return rows

def main():
    args = parse()
    torch.set_num_threads(1)  # as in a DataLoader worker; see RESULTS.md for what 2 threads do to a copy on a loaded machine
    root = Path(args.data or tempfile.mkdtemp(prefix='herbarium-loader-bench-'))
    data, copy = root/'sheets', root/'resized'
    n_train = -(-args.images // BS) * BS  # whole batches: fastai decodes the items of a dropped last batch too
    if not (data/'train'/'metadata.json').exists():
        made = make_synthetic_dataset(data, species=n_train // 8 + 1, size=1000, min_per_species=8, max_per_species=8,
                                      test_per_species=1, workers=os.cpu_count())
        print(f"wrote {made['train_images']} sheets of 667 x 1000 px in {made['seconds']:.0f} s")
    if not (copy/'train'/'metadata.json').exists(): resize_dataset(data, copy, size=384, progress=False)
    items = with_split(load_metadata(data/'train'), 0.2, 0).assign(is_valid=lambda d: np.arange(len(d)) >= n_train)
    copy_items = with_split(load_metadata(copy/'train'), 0.2, 0).assign(is_valid=items.is_valid.to_numpy())
    items, copy_items = (d[d.is_valid | (np.arange(len(d)) < n_train)] for d in (items, copy_items))
    print(f"{n_train} training sheets of 667 x 1000 px (JPEG, {np.mean([os.path.getsize(p) for p in items.path]) / 1024:.0f} KiB); "
          f"{SIZE} px, presize {PRESIZE}, batches of {BS}; {args.rounds} rounds; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print_rates('one core (num_workers=0, 1 torch thread): images per CPU-second, best and median pass',
                measure(items, copy_items, 0, args.rounds), ('best', 'median'))
    if args.workers:
        print_rates(f'{args.workers} worker processes: images per CPU-second of this process and the workers once they run; CPU seconds '
                    'to start them each pass; CPU ms per image in this process (receiving the batches)',
                    measure_workers(items, copy_items, args.workers, max(2, args.rounds // 2)), ('img/CPU-s', 'start s', 'this ms/img'))
    print(f"\nwhere one image's time goes (one core, {min(len(items), 128)} sheets, best of 3): ms per image")
    for name, ms in step_times(items.path.tolist()[:128]): print(f"  {name:56}{ms:7.2f}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")

if __name__ == '__main__': main()
