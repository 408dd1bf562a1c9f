#!/usr/bin/env python3
"""Write the kit's wheel and the wheels of every package a Kaggle image lacks for it into one folder (a wheelhouse).

Upload the folder as a Kaggle dataset and attach it to a notebook: with the internet off, the notebook installs with
`pip install --no-index --find-links /kaggle/input/<dataset> herbarium_fastai` (nbs/11_kaggle.ipynb's first cell).

    python tools/wheelhouse.py DEST                    # for Kaggle's stock image (tools/kaggle_image.txt)
    python tools/wheelhouse.py DEST --have have.txt    # for another environment: its `pip list --format=freeze`
    python tools/wheelhouse.py --install-from INPUT    # run the notebook's install cell, INPUT standing for /kaggle/input

What the image lacks is what pip would install there: pip resolves the kit's wheel against an empty environment that
holds a stand-in (name and version, no files) of each package of the image, and the wheels of its plan are downloaded
(pip has no option to resolve against a list of installed packages). A planned change to a package the image already
holds is printed: the install would change the image. The wheels are for this Python and platform; Kaggle's notebooks
run Linux x86_64 with the Python of tools/kaggle_image.txt's header, so make the folder there (or on the same Python)."""
import argparse, json, re, shutil, subprocess, sys, tempfile, venv
from pathlib import Path

from lock import normalized, read_freeze  # (tools/: this script's folder)

ROOT = Path(__file__).resolve().parent.parent
KAGGLE_IMAGE = ROOT/'tools'/'kaggle_image.txt'

def read_have(path):
    "{normalized name: (name, version)} of the packages a `pip list --format=freeze` file lists"
    have = read_freeze(path)
    if not have: sys.exit(f"{path}: no `name==version` line (make it with `pip list --format=freeze`)")
    return have

def pip(*args):
    "Run this Python's pip; its own messages go to the terminal"
    return subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', *args], check=True)

def build_wheel(dest):
    "The kit's wheel, built from this checkout into `dest`"
    pip('wheel', '--quiet', '--no-deps', '--wheel-dir', str(dest), str(ROOT))
    return max(Path(dest).glob('herbarium_fastai-*.whl'), key=lambda p: p.stat().st_mtime)

def stand_in_environment(folder, have):
    "An empty virtual environment under `folder` whose site-packages lists each package of `have` as installed"
    venv.create(folder, with_pip=False)
    site = next(Path(folder).glob('lib/python*/site-packages'), None) or Path(folder)/'Lib'/'site-packages'
    for name, version in have.values():
        info = site/f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
        info.mkdir()
        (info/'METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
        (info/'INSTALLER').write_text('stand-in\n')
    return Path(folder)/('Scripts/python.exe' if sys.platform == 'win32' else 'bin/python')

def install_plan(wheel, have, scratch):
    "What `pip install wheel` would install into an environment holding `have`: [(name, version)]"
    python = stand_in_environment(Path(scratch)/'env', have)
    report = Path(scratch)/'plan.json'
    pip('--python', str(python), 'install', '--dry-run', '--quiet', '--report', str(report), str(wheel))
    return [(i['metadata']['name'], i['metadata']['version']) for i in json.loads(report.read_text())['install']]

def fetch(specs, dest):
    "The wheels of `specs` (`name==version`) into `dest`, an sdist built into a wheel (`--no-index` installs need wheels)"
    if specs: pip('wheel', '--quiet', '--no-deps', '--wheel-dir', str(dest), *specs)

def install_cell(notebook=ROOT/'nbs'/'11_kaggle.ipynb'):
    "The code of the Kaggle notebook's install cell (the code cell that looks for `herbarium_fastai-*.whl`)"
    cells = json.loads(Path(notebook).read_text())['cells']
    return next(''.join(c['source']) for c in cells if c['cell_type'] == 'code' and 'herbarium_fastai-*.whl' in ''.join(c['source']))

def install_from(datasets):
    "Install the kit into this Python as the Kaggle notebook's install cell does, with `datasets` for /kaggle/input"
    exec(compile(install_cell().replace("'/kaggle/input'", repr(str(datasets))), '11_kaggle.ipynb, the install cell', 'exec'), {})

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dest', nargs='?', help='the folder to write (made if missing)')
    parser.add_argument('--have', default=str(KAGGLE_IMAGE), help="the packages the target environment holds, "
                        "as `pip list --format=freeze` writes them (default: Kaggle's stock image, tools/kaggle_image.txt)")
    parser.add_argument('--wheel', help="the kit's wheel, already built (default: build it from this checkout)")
    parser.add_argument('--install-from', metavar='INPUT', help="instead: install into this Python as nbs/11_kaggle.ipynb's "
                        "install cell does, with INPUT (a folder holding a wheelhouse) for /kaggle/input")
    args = parser.parse_args(argv)
    if args.install_from: return install_from(args.install_from)
    if not args.dest: parser.error('give DEST, the folder to write, or --install-from INPUT')
    dest, have = Path(args.dest), read_have(args.have)
    dest.mkdir(parents=True, exist_ok=True)
    wheel = Path(shutil.copy(args.wheel, dest)) if args.wheel else build_wheel(dest)
    try:
        with tempfile.TemporaryDirectory() as scratch: plan = install_plan(wheel, have, scratch)
    except subprocess.CalledProcessError: sys.exit(f"{args.have}: pip cannot install {wheel.name} beside these packages (its message is above)")
    changed = [f"{name} {have[normalized(name)][1]} -> {version}" for name, version in plan if normalized(name) in have]
    lacking = [(name, version) for name, version in plan if normalized(name) != 'herbarium-fastai']
    fetch([f'{name}=={version}' for name, version in lacking], dest)
    print(f"{dest}: {wheel.name} and the wheels of what {Path(args.have).name} lacks: "
          + (', '.join(f'{name} {version}' for name, version in lacking) or 'nothing'))
    if changed: print(f"note: installing there would change {', '.join(changed)}")

if __name__ == '__main__': main()
