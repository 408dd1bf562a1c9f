#!/usr/bin/env python3
"""Benchmark metadata ingest: the usual `json.load` + DataFrames + merge baseline against
`herbarium_fastai.metadata.load_metadata` (cold in one process, cold as it runs by default, which for a file this
large is in two processes, and cached), on a realistic synthetic Herbarium 2021 train/metadata.json
(2,257,759 images, 64,500 species by default).

Each measured load runs in its own fresh subprocess so that peak RSS (ru_maxrss) is its own;
timings cover the load call only (imports excluded, for baseline and ours alike). When load_metadata uses its
worker process, the worker's own peak memory (apart from the JSON file's mapped pages, which the loading process
counts already) and the size of the columns file it passed back are added to the peak. Before the runs the JSON
file is read once (page cache) and a throwaway process touches memory, so that no run pays the first touch.

    python bench/ingest.py                   # full size, in a temp folder that is removed afterwards
    python bench/ingest.py --images 200000   # quick try
    python bench/ingest.py --out /tmp/h21    # write the dataset there and keep it
    python bench/ingest.py --repeat 5        # runs per mode (the table shows best and median)
"""
import argparse, json, logging, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

FULL_IMAGES, FULL_SPECIES = 2_257_759, 64_500
INSTITUTIONS = ['NY', 'BPBM', 'NL', 'BRI', 'AK']
TARGETS = dict(cold=5.0, cached=30.0, memory=0.60)

# ---------------------------------------------------------------- synthetic 2021 train/metadata.json
_SYL = ['ra', 'lo', 'ce', 'mi', 'tha', 'pe', 'sor', 'bu', 'an', 'gi', 'lux', 'dro', 'ne', 'phy', 'ca', 'tri',
        'us', 'ella', 'op', 'sca', 'ver', 'mon', 'di', 'zan', 'que', 'fol', 'ri', 'ma', 'te', 'ol']

def _word(rng, n_syl):
    return ''.join(rng.choice(_SYL, n_syl))

def _names(rng, n, lo, hi, suffix='', capital=True):
    "`n` distinct pseudo-Latin words of `lo`..`hi` syllables."
    out, seen = [], set()
    while len(out) < n:
        w = _word(rng, rng.integers(lo, hi + 1)) + suffix
        w = w.capitalize() if capital else w
        if w not in seen: seen.add(w); out.append(w)
    return out

def species_counts(n_images, n_species, rng):
    "Long-tailed images per species: at least 3 each, summing to `n_images`."
    extra = n_images - 3 * n_species
    assert extra >= 0, 'need at least 3 images per species'
    w = rng.lognormal(0.0, 1.3, n_species)
    counts = np.floor(w / w.sum() * extra).astype(np.int64)
    counts[rng.choice(n_species, extra - int(counts.sum()), replace=False)] += 1
    return counts + 3

def make_categories(n_species, rng):
    n_orders, n_families, n_genera = 64, max(1, n_species // 150), max(1, n_species // 9)
    orders = _names(rng, min(n_orders, n_species), 2, 3, 'ales')
    families = _names(rng, n_families, 2, 3, 'aceae')
    fam_order = rng.integers(0, len(orders), n_families)
    genera = _names(rng, n_genera, 2, 4)
    gen_family = rng.integers(0, n_families, n_genera)
    authors = ['L.', 'Benth.', 'Hook.f.', '(Rchb.f.) Schltr.', 'DC.', 'A.Gray', 'Standl.', 'Müll.Arg.']
    cats, seen, g = [], set(), rng.integers(0, n_genera, n_species)
    for cid in range(n_species):
        while True:
            name = f'{genera[g[cid]]} {_word(rng, rng.integers(2, 4))}'
            if name not in seen: seen.add(name); break
        fam = gen_family[g[cid]]
        cats.append({'family': families[fam], 'id': cid,
                     'name': f'{name} {authors[cid % len(authors)]}', 'order': orders[fam_order[fam]]})
    return cats

def _chunks(fmt, cols, chunk=200_000):
    "Yield the JSON text of records `fmt % row` for the columns `cols`, comma-joined, chunk by chunk."
    n = len(cols[0])
    for s in range(0, n, chunk):
        rows = zip(*(c[s:s + chunk].tolist() for c in cols))
        yield (', ' if s else '') + ', '.join([fmt % r for r in rows])

def write_metadata_2021(out_dir, n_images=FULL_IMAGES, n_species=None, seed=0):
    "Write a realistic Herbarium 2021 `train/metadata.json` under `out_dir`; return its path."
    rng = np.random.default_rng(seed)
    if n_species is None: n_species = min(FULL_SPECIES, max(1, round(FULL_SPECIES * n_images / FULL_IMAGES)), n_images // 3)
    counts = species_counts(n_images, n_species, rng)
    cat_of = np.repeat(np.arange(n_species), counts)[rng.permutation(n_images)]  # shuffled image order
    image_id = rng.permutation(n_images).astype(np.int64)                         # ids unrelated to order
    shift = 7919 if n_images > 7919 else 1
    ann_id = (image_id + shift) % n_images if n_images > 1 else image_id + 1      # never equal to the image id
    width = rng.integers(560, 760, n_images); height = np.full(n_images, 1000)
    lic = rng.integers(0, 3, n_images); inst = rng.integers(0, len(INSTITUTIONS), n_images)
    ann_order = rng.permutation(n_images)                                           # annotations in yet another order
    cats = make_categories(n_species, rng)
    path = Path(out_dir) / 'train' / 'metadata.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.json.tmp')
    with open(tmp, 'w', encoding='utf-8', buffering=1 << 22) as f:
        f.write('{"annotations": [')
        for t in _chunks('{"category_id": %d, "id": %d, "image_id": %d, "institution_id": %d}',
                         [cat_of[ann_order], ann_id[ann_order], image_id[ann_order], inst[ann_order]]): f.write(t)
        f.write('], "categories": '); f.write(json.dumps(cats, ensure_ascii=False))
        f.write(', "images": [')
        for t in _chunks('{"file_name": "images/%03d/%02d/%d.jpg", "height": %d, "id": %d, "license": %d, "width": %d}',
                         [cat_of // 100, cat_of % 100, image_id, height, image_id, lic, width]): f.write(t)
        f.write('], "info": ')
        f.write(json.dumps({'year': 2021, 'version': '1', 'url': 'https://www.kaggle.com/c/herbarium-2021-fgvc8',
                            'description': 'Herbarium 2021: Half-Earth Challenge (synthetic benchmark copy)',
                            'contributor': 'synthetic', 'date_created': '2021-03-01'}))
        f.write(', "institutions": ' + json.dumps([{'id': i, 'name': n} for i, n in enumerate(INSTITUTIONS)]))
        f.write(', "licenses": ' + json.dumps([{'id': i, 'name': f'License {i}', 'url': f'https://example.org/license/{i}'}
                                               for i in range(3)]))
        f.write('}')
    os.replace(tmp, path)
    return path

# ---------------------------------------------------------------- the measured loads (child processes)
def _baseline(path):
    "What users write: json.load, one DataFrame per section, merge on annotation.image_id == image.id."
    import pandas as pd
    with open(path) as f: d = json.load(f)
    images = pd.DataFrame(d['images'])
    anns = pd.DataFrame(d['annotations'])
    cats = pd.DataFrame(d['categories'])
    df = images.merge(anns.drop(columns='id'), left_on='id', right_on='image_id')
    df = df.merge(cats.rename(columns={'id': 'category_id'}), on='category_id')
    return df

def _ours(path, cache, parallel):
    from herbarium_fastai.metadata import load_metadata
    return load_metadata(path.parent, cache=cache, parallel=parallel)

class _WorkerRecords(logging.Handler):
    "Keeps what load_metadata logs about its worker process (time, peak memory, size of the columns it passed back)."
    def __init__(self): super().__init__(logging.DEBUG); self.workers = []
    def emit(self, record):
        if hasattr(record, 'metadata_worker'): self.workers.append(record.metadata_worker)

def child(mode, path):
    path = Path(path)
    workers = _WorkerRecords()
    if mode == 'baseline':
        import pandas as pd
        fn = _baseline
    else:
        import herbarium_fastai.metadata  # import cost is not part of the load
        log = logging.getLogger('herbarium_fastai.metadata'); log.setLevel(logging.DEBUG); log.addHandler(workers)
        fn = lambda p: _ours(p, cache=mode in ('cold', 'cached'), parallel=False if mode == 'serial' else None)
    t0 = time.perf_counter()
    df = fn(path)
    secs = time.perf_counter() - t0
    if mode != 'baseline':  # a large frame is cached by a background thread: its time and memory are reported too
        from herbarium_fastai.metadata_cache import finish_cache_writes
        finish_cache_writes()
    until_cached = time.perf_counter() - t0
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # a worker's memory is its own peak apart from the pages of the mapped JSON file (which this process counts
    # already), plus the file of columns it passed back; added to this process's peak (an upper bound: the two
    # peaks need not coincide)
    worker_mb = sum(w.get('peak_mb', 0) - w.get('file_mb', 0) + w['columns_mb'] for w in workers.workers)
    print(json.dumps(dict(mode=mode, seconds=secs, until_cached=until_cached, peak_mb=self_mb + worker_mb, self_mb=self_mb, worker_mb=worker_mb,
                          worker_seconds=sum(w['seconds'] for w in workers.workers), rows=len(df),
                          n_categories=int(df['category_id'].nunique()))))

def _run_child(mode, path, env):
    out = subprocess.run([sys.executable, __file__, '--child', mode, str(path)], env=env,
                         capture_output=True, text=True)
    if out.returncode: sys.exit(f'{mode} failed:\n{out.stderr}')
    return json.loads(out.stdout.strip().splitlines()[-1])

def _warm_up(path, mb):
    "Put the JSON file in the page cache and have the OS back `mb` MB of memory once, so that no run pays for it first."
    with open(path, 'rb') as f:
        while f.read(1 << 24): pass
    subprocess.run([sys.executable, '-c', f'import numpy as np; np.ones({mb} << 20, np.uint8)'], check=True)

def _median(xs): return sorted(xs)[len(xs) // 2]

LABELS = dict(baseline='baseline: json.load + DataFrames + merge', serial='ours, cold, one process (parallel=False)',
              nocache='ours, cold (cache=False)', cold='ours, cold (empty cache, writes it)', cached='ours, cached (arrow hit)')

def report(runs):
    "Print best and median seconds, peak MB (the largest seen) per mode, the ratios, and which targets are met."
    res = {m: dict(best=min(r['seconds'] for r in rs), median=_median([r['seconds'] for r in rs]),
                   peak_mb=max(r['peak_mb'] for r in rs), all=[round(r['seconds'], 2) for r in rs]) for m, rs in runs.items()}
    b = res['baseline']
    print(f"\n{'load':<40} {'best s':>7} {'median s':>8} {'peak MB':>8} {'speed-up (best/median)':>23} {'mem ratio':>9}   all runs (s)")
    for m, r in res.items():
        speed = f"{b['best'] / r['best']:.1f}x / {b['median'] / r['median']:.1f}x"
        print(f"{LABELS[m]:<40} {r['best']:7.2f} {r['median']:8.2f} {r['peak_mb']:8.0f} {speed:>23} "
              f"{r['peak_mb'] / b['peak_mb']:9.2f}   {r['all']}")
    mem = max(res[m]['peak_mb'] for m in ('serial', 'nocache', 'cold', 'cached')) / b['peak_mb']
    c = runs['cold']
    print(f"{LABELS['cold']}: the load returns before its cache entry is written (a background thread writes it); "
          f"the entry was in place {min(r['until_cached'] for r in c):.2f} s (best) / {_median([r['until_cached'] for r in c]):.2f} s "
          f"(median) after the call began: {b['best'] / min(r['until_cached'] for r in c):.1f}x / "
          f"{b['median'] / _median([r['until_cached'] for r in c]):.1f}x the baseline")
    for m in ('nocache', 'cold'):
        w = [r for r in runs[m] if r['worker_mb']]
        if w: print(f"{LABELS[m]}: peak MB = this process {max(r['self_mb'] for r in w):.0f} + worker process "
                    f"{max(r['worker_mb'] for r in w):.0f} (its own memory and the columns it passed back); "
                    f"worker {_median([r['worker_seconds'] for r in w]):.2f} s (median), in {len(w)} of {len(runs[m])} runs")
    print(f"\n{'target':<52} {'best':>6} {'median':>7}")
    for name, m, target in [(f"cold load (cache=False) >= {TARGETS['cold']:.0f}x faster", 'nocache', TARGETS['cold']),
                            (f"cold load (empty cache) >= {TARGETS['cold']:.0f}x faster", 'cold', TARGETS['cold']),
                            (f"cached load >= {TARGETS['cached']:.0f}x faster", 'cached', TARGETS['cached'])]:
        best, median = b['best'] / res[m]['best'], b['median'] / res[m]['median']
        print(f"{name:<52} {best:6.2f} {median:7.2f}  {'MET' if best >= target else 'NOT MET'} (best), "
              f"{'MET' if median >= target else 'NOT MET'} (median)")
    print(f"{'peak RSS <= %.2f x baseline (worst of ours)' % TARGETS['memory']:<52} {mem:6.2f} {'':>7}  "
          f"{'MET' if mem <= TARGETS['memory'] else 'NOT MET'}")
    return res

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='folder for the synthetic dataset (default: a temp folder, removed afterwards)')
    p.add_argument('--images', type=int, default=FULL_IMAGES, help='number of train images')
    p.add_argument('--species', type=int, default=None, help='number of species (default scales with --images)')
    p.add_argument('--repeat', type=int, default=3, help='runs of each mode; the table shows the median time')
    p.add_argument('--child', nargs=2, metavar=('MODE', 'PATH'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(*a.child)
    tmp = None if a.out else tempfile.mkdtemp(prefix='herbarium-bench-')
    out = Path(a.out or tmp)
    try:
        t0 = time.perf_counter()
        path = write_metadata_2021(out, a.images, a.species)
        print(f'wrote {path} ({path.stat().st_size / 2**20:,.0f} MiB, {a.images:,} images) in {time.perf_counter() - t0:.1f} s')
        _warm_up(path, mb=max(256, 8 * path.stat().st_size >> 20))
        env = {**os.environ}
        env['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get('PYTHONPATH', '')])
        runs = {m: [] for m in LABELS}
        for _ in range(a.repeat):
            cache_dir = Path(tempfile.mkdtemp(prefix='herbarium-bench-cache-'))
            env['HERBARIUM_CACHE'] = str(cache_dir)
            try:
                for m in LABELS: runs[m].append(_run_child(m, path, env))
            finally: shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        if tmp: shutil.rmtree(tmp, ignore_errors=True)
    rows = {r['rows'] for rs in runs.values() for r in rs}
    assert len(rows) == 1, f'row counts differ: {rows}'
    report(runs)
    print(f'\nevery run loaded {rows.pop():,} rows; {a.repeat} runs per mode, each in a fresh process, timed around the '
          f'load call only; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end')

if __name__ == '__main__': main()
