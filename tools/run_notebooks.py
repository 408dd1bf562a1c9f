#!/usr/bin/env python3
"""Run notebooks top to bottom with nbclient (a Jupyter kernel of this Python), without nbdev, failing on any error.

For an environment that cannot hold nbdev 2 (it needs fastcore 1.x): .ci/run's legs that install the kit's wheel run the
walkthrough and the Kaggle notebook with it. Cells are skipped as `nbdev_test` skips them: those flagged with one of
settings.ini's `tst_flags` (`#| notest`, `#| slow`, `#| cuda`) or `#| eval: false`. Nothing is written back.

    python tools/run_notebooks.py nbs/10_walkthrough.ipynb nbs/11_kaggle.ipynb [--flags cuda] [--workers 2]"""
import argparse, configparser, os, re, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def skip_flags(extra=()):
    "The directives whose cells are not run: settings.ini's `tst_flags`, less those asked for with `--flags`"
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split()) - set(extra)

def directives(source):
    "The `#| name` directives at the top of a cell's source, as {name: value}"
    found = {}
    for line in source.splitlines():
        m = re.match(r'\s*#\|\s*([\w-]+)\s*:?\s*(.*)', line)
        if not m: break
        found[m[1]] = m[2].strip()
    return found

def runnable(nb, flags):
    "`nb` with the cells `nbdev_test` would skip removed"
    keep = lambda c: c.cell_type != 'code' or not (flags & directives(c.source).keys() or directives(c.source).get('eval') == 'false')
    nb.cells = [c for c in nb.cells if keep(c)]
    return nb

def run_notebook(path, flags, timeout=1200):
    "Run the notebook at `path` in its own folder; returns (name, seconds, error text or None)"
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = runnable(nbformat.read(path, as_version=4), flags)
    started = time.time()
    sockets = tempfile.mkdtemp(prefix='kernel-')
    kernel = KernelManager(transport='ipc', ip=f'{sockets}/ipc')  # local sockets, not TCP
    try: NotebookClient(nb, km=kernel, timeout=timeout, resources={'metadata': {'path': str(Path(path).parent)}}).execute()
    except CellExecutionError as e: return Path(path).name, time.time() - started, re.sub(r'\x1b\[[0-9;]*m', '', str(e))[-4000:]
    finally:
        if kernel.has_kernel: kernel.shutdown_kernel()
        shutil.rmtree(sockets, ignore_errors=True)
    return Path(path).name, time.time() - started, None

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebooks', nargs='+', help='the notebooks to run')
    parser.add_argument('--flags', default='', help="flags of tst_flags to run anyway, comma-separated (e.g. 'cuda')")
    parser.add_argument('--workers', type=int, default=2, help='notebooks run at once, each with its share of the cores')
    args = parser.parse_args(argv)
    flags = skip_flags(filter(None, args.flags.split(',')))
    # one kernel a worker, each with its share of the cores (as nbdev_test runs with OMP_NUM_THREADS=1 on 2 cores), and
    # this environment's commands on the PATH, as in an activated virtual environment (the notebooks run herbarium-train)
    os.environ['PATH'] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, len(os.sched_getaffinity(0)) // args.workers)))
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_notebook, args.notebooks, [flags] * len(args.notebooks)))
    for name, seconds, error in results:
        print(f"{name}: {'failed' if error else 'ran'} in {seconds:.0f} s" + (f"\n{error}" if error else ''))
    return 1 if any(error for *_, error in results) else 0

if __name__ == '__main__': sys.exit(main())
