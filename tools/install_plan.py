#!/usr/bin/env python3
"""Say what installing the kit does to an environment, and fail if it moves a package the environment must keep.

    pip install --dry-run --report plan.json herbarium_fastai-X.whl          # in the environment, then:
    python tools/install_plan.py plan.json before.txt --keep torch numpy ...  # what pip plans there
    python tools/install_plan.py --installed before.txt after.txt --keep ...  # what an install did

before.txt and after.txt are `pip list --format=freeze` of the environment. Exit status 1 when a kept package would be
(or was) installed, upgraded, downgraded or removed; .ci/run's newest and oldest legs run both checks."""
import argparse, json, sys
from pathlib import Path

from lock import normalized, read_freeze  # (tools/: this script's folder)

def frozen(path):
    "{normalized name: version} of a `pip list --format=freeze` file"
    return {name: version for name, (_, version) in read_freeze(path).items()}

def planned(report, before):
    "The environment `before` as it would be after the installs of pip's `--report` file"
    installs = {normalized(i['metadata']['name']): i['metadata']['version'] for i in json.loads(Path(report).read_text())['install']}
    return {**before, **installs}

def changes(before, after):
    "[(name, version before or None, version after or None)] of every package that differs"
    return [(n, before.get(n), after.get(n)) for n in sorted(before.keys() | after.keys()) if before.get(n) != after.get(n)]

def describe(change):
    name, old, new = change
    return f"{name} {new} (new)" if old is None else f"{name} {old} (removed)" if new is None else f"{name} {old} -> {new}"

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('first', help="pip's --report file (or, with --installed, the freeze before)")
    parser.add_argument('second', help='the freeze before (or, with --installed, the freeze after)')
    parser.add_argument('--installed', action='store_true', help='compare two freezes: what an install did')
    parser.add_argument('--keep', nargs='+', default=[], help='packages that must not move')
    args = parser.parse_args(argv)
    before = frozen(args.second if not args.installed else args.first)
    after = frozen(args.second) if args.installed else planned(args.first, before)
    found = changes(before, after)
    print(f"{'installed' if args.installed else 'pip plans'}: " + (', '.join(map(describe, found)) or 'nothing'))
    moved = [c for c in found if c[0] in {normalized(k) for k in args.keep}]
    if moved: sys.exit(f"it {'changed' if args.installed else 'would change'} what the environment must keep: {', '.join(map(describe, moved))}")
    print("no change to " + ', '.join(f"{k} {before.get(normalized(k), '(absent)')}" for k in args.keep))

if __name__ == '__main__': main()
