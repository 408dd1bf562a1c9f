#!/usr/bin/env python3
"""The long fuzz runs of the suite's targets (tests/fuzz_targets.py): the HTTP API from its OpenAPI schema with and
without the token, and `load_metadata` on mutated 2020/2021/2022 documents. In this process (no port opened).

    python tools/fuzz.py [--cases 10000] [--seed 0] [--target api-with-token api-without-token metadata]

Prints, per target, the cases tried, the 5xx answers, the tracebacks (exceptions other than the kit's one-line errors),
the files left behind (temporary files of uploads or of `write_atomically`), the time, and the first problems found;
exits 1 if there is any problem. Each target can run in a process of its own (`--target`), and every 500 cases the
counts so far go to stderr."""
import argparse, json, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT/'tests')]
TARGETS = ('api-with-token', 'api-without-token', 'metadata')

def _reporter(target:str):
    "A `progress` callback: the counts on stderr every 500 cases"
    def report(counts):
        if counts['cases'] % 500 == 0: print(f'{target}: {json.dumps(dict(counts))}', file=sys.stderr, flush=True)
    return report

def api_run(cases:int, seed:int, with_token:bool)->dict:
    "The API fuzzed, `cases` examples per operation, with or without the token; uploads spooled to a fresh temporary folder"
    from fuzz_targets import fuzz_api
    from herbarium_fastai.serve import create_app
    scratch = Path(tempfile.mkdtemp(prefix='herbarium-fuzz-api-'))
    run, spool = scratch/'run', scratch/'spool'
    shutil.copytree(ROOT/'tests'/'data'/'model_0.1', run, ignore=shutil.ignore_patterns('*.pkl'))
    spool.mkdir()
    tempfile.tempdir, token = str(spool), 'fuzz-token-0123456789'
    app = create_app(run, host='0.0.0.0', token=token, max_upload_mb=0.05, max_files=3)
    target, start = 'api-with-token' if with_token else 'api-without-token', time.time()
    result = fuzz_api(app, token, cases=cases, with_token=with_token, seed=seed, progress=_reporter(target))
    counts, left = result['counts'], [str(p) for p in spool.rglob('*')]
    tempfile.tempdir = None
    shutil.rmtree(scratch, ignore_errors=True)
    return {target: dict(cases=counts['cases'], **{'5xx': counts['5xx']}, tracebacks=counts.get('tracebacks', 0), files_left=len(left),
                         seconds=round(time.time() - start), statuses={k: v for k, v in counts.items() if k.startswith('/')},
                         problems=result['problems'][:10])}

def metadata_run(cases:int, seed:int)->dict:
    "`load_metadata` on `cases` mutated documents"
    from fuzz_targets import fuzz_metadata
    start = time.time()
    result = fuzz_metadata(cases=cases, seed=seed, progress=_reporter('metadata'))
    counts = result['counts']
    return {'metadata': dict(cases=counts['cases'], tracebacks=counts.get('tracebacks', 0), files_left=counts.get('files left', 0),
                             loaded=counts.get('loaded', 0), refused=counts.get('refused', 0), seconds=round(time.time() - start),
                             problems=result['problems'][:10])}

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cases', type=int, default=10_000, help='cases per target (per API operation with parameters)')
    parser.add_argument('--seed', type=int, default=0, help="hypothesis' seed")
    parser.add_argument('--target', nargs='+', choices=TARGETS, default=list(TARGETS), help='which targets (default: all)')
    args = parser.parse_args()
    results = {}
    for target in args.target:
        if target == 'metadata': results.update(metadata_run(args.cases, args.seed))
        else: results.update(api_run(args.cases, args.seed, target == 'api-with-token'))
    print(json.dumps(results, indent=2))
    sys.exit(1 if any(r['problems'] or r.get('5xx') or r['tracebacks'] or r['files_left'] for r in results.values()) else 0)
