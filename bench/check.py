#!/usr/bin/env python3
"""Benchmark the existence check of `herbarium-check` / `herbarium-train`: `check_images` (one `os.scandir` per image
folder) against one `os.path.exists` per image, on a tree of empty files in the Kaggle 2021 layout
(`train/images/CCC/CC/ID.jpg`, ~35 images a folder as in Herbarium 2021), with 0.1% of the files missing.

    python bench/check.py                     # 226,000 files (a tenth of Herbarium 2021)
    python bench/check.py --images 50000
"""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from herbarium_fastai.data import check_images

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=226_000)
    p.add_argument('--per-folder', type=int, default=35)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='herbarium-check-'))
    try:
        rng = np.random.default_rng(0)
        cats = np.arange(a.images) // a.per_folder
        names = [f'images/{c // 100:03d}/{c % 100:02d}/{i}.jpg' for i, c in enumerate(cats)]
        df = pd.DataFrame(dict(image_id=np.arange(a.images), file_name=names))
        df.attrs['root'] = str(tmp/'train')
        gone = set(rng.choice(a.images, a.images // 1000, replace=False).tolist())
        t0 = time.perf_counter()
        for i, n in enumerate(names):
            path = tmp/'train'/n
            if i % a.per_folder == 0: path.parent.mkdir(parents=True, exist_ok=True)
            if i not in gone: path.touch()
        print(f'{a.images:,} images in {cats[-1] + 1:,} folders, {len(gone):,} missing; tree written in {time.perf_counter() - t0:.1f} s')
        paths = [os.path.join(str(tmp/'train'), n) for n in names]
        rows = []
        for _ in range(3):
            t0 = time.perf_counter(); found = check_images(df); ours = time.perf_counter() - t0
            t0 = time.perf_counter(); base = [i for i, p in enumerate(paths) if not os.path.exists(p)]; baseline = time.perf_counter() - t0
            assert sorted(found.image_id) == sorted(gone) == base
            rows.append((baseline, ours))
        baseline, ours = min(r[0] for r in rows), min(r[1] for r in rows)
        print(f'\n{"existence check (warm cache, best of 3)":<44} {"seconds":>8} {"images/s":>12} {"speed-up":>9}')
        print(f'{"baseline: os.path.exists per image":<44} {baseline:8.2f} {a.images / baseline:12,.0f} {1:8.2f}x')
        print(f'{"ours: check_images (scandir per folder)":<44} {ours:8.2f} {a.images / ours:12,.0f} {baseline / ours:8.2f}x')
        print(f'\n(all runs: {[(round(b, 2), round(o, 2)) for b, o in rows]}; {os.cpu_count()} CPUs, load average '
              f'{os.getloadavg()[0]:.1f}; metadata loading not included: check_images starts from the frame)')
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
