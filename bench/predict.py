#!/usr/bin/env python3
"""Streaming top-k prediction against fastai's get_preds, at Kaggle's class count.

A 64,500-class resnet34 (random weights, the safe model format) predicts 1,000 and 10,000 small test
images, each run in a fresh process so that its peak RSS is its own. get_preds keeps every probability
(images x classes floats); predict_metadata keeps k per image. Prints seconds, images/s and peak RSS side by
side, the growth of peak memory from the smallest to the largest run, and whether the targets hold:
ours grows <= 1.2x from 1k to 10k images and stays below get_preds'.

    python bench/predict.py                      # 1,000 and 10,000 images, 64,500 classes, 32 px
    python bench/predict.py --counts 200,1000    # a quick try
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

def make_inputs(folder, n_images, classes, size, arch):
    "Write `n_images` small JPEGs, their test metadata, and a random-weight safe model with `classes` classes"
    import numpy as np
    from PIL import Image
    from herbarium_fastai.inference import learner_from_description, save_safe_model
    from herbarium_fastai.model_file import ModelDescription
    rng = np.random.default_rng(0)
    images = folder/'test'/'images'; images.mkdir(parents=True)
    records = []
    for i in range(n_images):
        name = f'images/{i // 1000:03d}/{i}.jpg'
        (folder/'test'/name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder/'test'/name, quality=85)
        records.append(dict(id=i, file_name=name, width=size, height=size, license=0))
    (folder/'test'/'metadata.json').write_text(json.dumps(dict(images=records, info={}, licenses=[])))
    description = ModelDescription(arch=arch, size=size, presize=size, augment=False, class_counts=[3] * classes,
                                   classes=[dict(category_id=c, species=f'species {c}', genus=None, family=None, order=None)
                                            for c in range(classes)])
    save_safe_model(learner_from_description(description), folder/'model')

def measure(folder, method, n_images, bs):
    "Run in a child process: predict the first `n_images` test images with `method`; print JSON"
    from herbarium_fastai.data import with_paths
    from herbarium_fastai.inference import load_model, predict_metadata
    from herbarium_fastai.metadata import load_metadata
    learn = load_model(folder/'model', cpu=True)
    test_df = load_metadata(folder/'test', cache=False).iloc[:n_images]
    start = time.perf_counter()
    if method == 'ours': top1 = predict_metadata(learn, test_df, k=5, bs=bs, num_workers=0).category_id.to_numpy()
    else:
        dl = learn.dls.test_dl(with_paths(test_df), bs=bs, num_workers=0)
        probs, _ = learn.get_preds(dl=dl)
        top1 = probs.topk(5, dim=-1).indices[:, 0].numpy()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(method=method, images=n_images, seconds=seconds, peak_mb=peak_mb, first=int(top1[0]))))

def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--counts', default='1000,10000', help='test images per run, comma-separated')
    parser.add_argument('--classes', type=int, default=64500)
    parser.add_argument('--size', type=int, default=32, help='image size, px')
    parser.add_argument('--bs', type=int, default=64)
    parser.add_argument('--arch', default='resnet34')
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child: return measure(Path(args.child[0]), args.child[1], int(args.child[2]), args.bs)
    counts = [int(c) for c in args.counts.split(',')]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        make_inputs(folder, max(counts), args.classes, args.size, args.arch)
        rows = []
        for n in counts:
            for method in ('ours', 'get_preds'):
                out = subprocess.run([sys.executable, __file__, '--bs', str(args.bs), '--child', str(folder), method, str(n)],
                                     capture_output=True, text=True)
                if out.returncode: sys.exit(f"{method} on {n} images failed:\n{out.stderr[-3000:]}")
                out = out.stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
    by = {(r['method'], r['images']): r for r in rows}
    print(f"predict_metadata (k=5) vs learn.get_preds: {args.arch}, {args.classes:,} classes, {args.size} px, batch {args.bs}, "
          f"CPU ({os.cpu_count()} cores), each run a fresh process\n")
    print(f"{'images':>7} | {'ours s':>7} {'img/s':>7} {'peak MB':>8} | {'get_preds s':>11} {'img/s':>7} {'peak MB':>8} | {'memory ours/get_preds':>21} {'speed ours/get_preds':>20}")
    for n in counts:
        o, g = by[('ours', n)], by[('get_preds', n)]
        print(f"{n:>7} | {o['seconds']:>7.1f} {n / o['seconds']:>7.0f} {o['peak_mb']:>8.0f} | {g['seconds']:>11.1f} {n / g['seconds']:>7.0f} "
              f"{g['peak_mb']:>8.0f} | {o['peak_mb'] / g['peak_mb']:>21.2f} {g['seconds'] / o['seconds']:>20.2f}")
        assert o['first'] == g['first'], "the two methods disagree on the first image"
    small, large = counts[0], counts[-1]
    growth = by[('ours', large)]['peak_mb'] / by[('ours', small)]['peak_mb']
    growth_baseline = by[('get_preds', large)]['peak_mb'] / by[('get_preds', small)]['peak_mb']
    below = all(by[('ours', n)]['peak_mb'] < by[('get_preds', n)]['peak_mb'] for n in counts)
    print(f"\npeak memory growth {small:,} -> {large:,} images: ours {growth:.2f}x (target <= 1.20: {'MET' if growth <= 1.2 else 'NOT MET'}), "
          f"get_preds {growth_baseline:.2f}x")
    print(f"ours below get_preds at every size: {'MET' if below else 'NOT MET'}")

if __name__ == '__main__': main()
