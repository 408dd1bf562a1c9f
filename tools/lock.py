#!/usr/bin/env python3
"""The lock, constraints.txt: the exact version of every package the test suite passed with, for reproducible runs.

settings.ini states what the kit needs as ranges (what a user's environment may hold); the README's commands and .ci/run
install with `pip install -c constraints.txt ...`, so a fresh clone gets the releases the suite passed with, whatever
came out upstream since. To raise a version: in a fresh venv, `pip install -e ".[dev]"` without `-c` (the newest releases
the ranges allow), run the README's test command, and when it is green write the lock from that environment:

    python tools/lock.py             # write constraints.txt from the packages of this environment
    python tools/lock.py --lowest    # print settings.ini's lower bounds as == pins (.ci/run's oldest-releases leg)"""
import argparse, configparser, platform, re, sys
from datetime import date
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT/'constraints.txt'
TOOLS = {'pip', 'setuptools', 'wheel', 'herbarium-fastai'}  # the installer's own, and the kit itself: not locked
HEADER = """\
# The lock: every package of the environment the test suite passed with (the README's test command, green), exactly.
# Written by `python tools/lock.py` on Python {python}, {system} {machine}, {day}. Install with it: pip install -c constraints.txt ...
# What the kit needs is in settings.ini (ranges); raise a version here only with a green suite (tools/lock.py says how).
"""

def normalized(name): return re.sub(r'[-_.]+', '-', name).lower()

def read_freeze(path):
    "{normalized name: (name, version)} of a `pip list --format=freeze` (or `pip freeze`) file; tools/wheelhouse.py and install_plan.py read them"
    pairs = (re.match(r'\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*==\s*([^\s;#]+)', line) for line in Path(path).read_text().splitlines())
    return {normalized(m[1]): (m[1], m[2]) for m in pairs if m}

def settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']

def requirements(keys=('requirements', 'onnx_requirements', 'tensorboard_requirements')):
    "The requirements of settings.ini under `keys` (the runtime's and the optional features'), one string each"
    return [r for k in keys for r in settings().get(k, '').split()]

def name_of(requirement): return re.match(r'([A-Za-z0-9_.\-]+)', requirement)[1]

def lower_bounds(reqs):
    "`name==version` for each requirement's `>=version`; a requirement without one is an error"
    pins, unbounded = [], []
    for r in reqs:
        bound = re.search(r'>=\s*([^,;\s]+)', r)
        if bound: pins.append(f'{name_of(r)}=={bound[1]}')
        else: unbounded.append(r)
    if unbounded: sys.exit(f"settings.ini: no lower bound (>=) for {', '.join(unbounded)}")
    return pins

def installed():
    "{normalized name: version} of the packages of this environment, but pip's own and the kit"
    found = {normalized(d.metadata['Name']): d.version for d in distributions() if d.metadata['Name']}
    return {name: v for name, v in sorted(found.items()) if name not in TOOLS}

def lock_text(packages):
    header = HEADER.format(python=platform.python_version(), system=platform.system(), machine=platform.machine(), day=date.today())
    return header + ''.join(f'{name}=={version}\n' for name, version in packages.items())

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--lowest', action='store_true', help="print settings.ini's lower bounds as == pins instead")
    args = parser.parse_args(argv)
    if args.lowest: return print('\n'.join(lower_bounds(requirements())))
    packages = installed()
    missing = [r for r in requirements(('dev_requirements', 'test_requirements')) if normalized(name_of(r)) not in packages]
    if missing: sys.exit(f"this environment lacks the dev extra ({', '.join(missing)}): pip install -e \".[dev]\", run the suite, then lock")
    LOCK.with_suffix('.tmp').write_text(lock_text(packages))
    LOCK.with_suffix('.tmp').replace(LOCK)  # all or nothing
    print(f"wrote {LOCK.name}: {len(packages)} packages", file=sys.stderr)

if __name__ == '__main__': main()
