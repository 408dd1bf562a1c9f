#!/usr/bin/env python3
"""Benchmark image decoding for presizing: full decode + resize against JPEG draft-mode decode + resize, and reading
from a presized cache written by `herbarium-resize` (`herbarium_fastai.data.resize_dataset`).

Writes synthetic 1000-px herbarium sheets (`make_synthetic_dataset(size=1000)`: 667 x 1000 JPEGs, quality 90), then
times, in this one process (so the figures are per core), over the same images:

  shrink (what herbarium-resize does per image: decode, resize to 384 px, encode, write)
    (a) full decode + resize + save           `shrink_image(..., draft=False)`
    (b) draft-mode decode + resize + save     `shrink_image(..., draft=True)`  (the herbarium-resize path)
  load (an image of 384 px in memory, as a training item needs it)
    (a) full decode + resize                  from the 1000-px originals
    (b) draft-mode decode + resize            from the 1000-px originals
    (c) decode from the presized cache        the 384-px copies `resize_dataset` wrote

Each mode runs --repeat times over all images (files in the page cache); the best pass counts.

    python bench/decode.py                    # 120 sheets
    python bench/decode.py --images 40        # quick try
"""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from herbarium_fastai.data import resize_dataset, shrink_image
from herbarium_fastai.metadata import image_paths, load_metadata
from herbarium_fastai.synth import make_synthetic_dataset

SIZE = 384

def _load(path, size, draft):
    with Image.open(path) as im:
        if draft and max(im.size) > size:
            s = size / max(im.size)
            im.draft('RGB', (round(im.width * s), round(im.height * s)))
        im = im.convert('RGB')
        if max(im.size) > size:
            s = size / max(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR, reducing_gap=None)
        return im.size

def _rate(fn, items, repeat):
    "Images per second of the best of `repeat` passes of `fn` over `items`."
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items: fn(item)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=120, help='number of 1000-px sheets to write and time')
    p.add_argument('--repeat', type=int, default=3, help='passes per mode; the best counts')
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='herbarium-decode-'))
    try:
        species = max(1, a.images // 6)
        make_synthetic_dataset(tmp/'data', species=species, size=1000, seed=0, supersample=1, min_per_species=5,
                               max_per_species=5, test_per_species=1, workers=None)
        paths = image_paths(load_metadata(tmp/'data'/'train', cache=False))[:a.images]
        w, h = Image.open(paths[0]).size
        print(f'{len(paths)} synthetic sheets of {w} x {h} px, {sum(os.path.getsize(p) for p in paths) / len(paths) / 1024:.0f} KiB '
              f'average; target {SIZE} px; one process (per-core rates), best of {a.repeat} passes')
        out = tmp/'out'; out.mkdir()
        targets = [str(out/f'{i}.jpg') for i in range(len(paths))]
        jobs = list(zip(paths, targets))
        shrink = {'(a) full decode + resize + save': _rate(lambda j: shrink_image(*j, size=SIZE, draft=False), jobs, a.repeat),
                  '(b) draft decode + resize + save': _rate(lambda j: shrink_image(*j, size=SIZE, draft=True), jobs, a.repeat)}
        t0 = time.perf_counter()
        summary = resize_dataset(tmp/'data', tmp/'small', size=SIZE, workers=0, progress=False)
        n_all = summary['written']
        shrink['herbarium-resize path, 1 process (resize_dataset)'] = n_all / (time.perf_counter() - t0)
        cached = image_paths(load_metadata(tmp/'small'/'train', cache=False))[:a.images]
        load = {'(a) full decode + resize': _rate(lambda p: _load(p, SIZE, False), paths, a.repeat),
                '(b) draft decode + resize': _rate(lambda p: _load(p, SIZE, True), paths, a.repeat),
                '(c) decode from the presized cache': _rate(lambda p: _load(p, SIZE, False), cached, a.repeat)}
        for title, rates in (('shrink 1000 -> 384 px (per image, written)', shrink), ('load a 384-px image', load)):
            base = next(iter(rates.values()))
            print(f'\n{title:<52} {"images/s/core":>14} {"ms/image":>9} {"vs (a)":>7}')
            for name, r in rates.items(): print(f'{name:<52} {r:14.1f} {1000 / r:9.2f} {r / base:6.2f}x')
        ratio = shrink['(b) draft decode + resize + save'] / shrink['(a) full decode + resize + save']
        print(f'\ntarget: resize >= 2x faster per image than full-decode resizing: {ratio:.2f}x  {"MET" if ratio >= 2 else "NOT MET"}')
        print(f'(resize_dataset wrote {n_all} images incl. test; python {sys.version.split()[0]}, Pillow {Image.__version__}, '
              f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)')
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
