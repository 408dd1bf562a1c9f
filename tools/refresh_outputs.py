#!/usr/bin/env python3
"""Run notebooks and keep the outputs a reader learns from (tables, plots, printed results), so that a notebook opened
as a file (on GitHub, in any viewer) shows them.

    python tools/refresh_outputs.py                 # every notebook in nbs/
    python tools/refresh_outputs.py nbs/04_learner.ipynb ...

Each notebook runs in a fresh execnb shell from nbs/ (as `nbdev_test` runs it: cells flagged with settings.ini's
`tst_flags` are skipped), seeded, with plots at a modest resolution. Then its outputs are cleaned: progress bars are
reduced to their final line or dropped, warnings on stderr dropped (the kit's own `note:` lines kept), and paths of the
machine that ran them replaced (`<tmp>`, `<repo>`, `~`). A notebook that raises is not written (its error is printed).
Finish with `nbdev_clean`. `tests/test_notebooks.py` checks what is kept: no error output, no machine path."""
import configparser, json, os, re, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
import os, random, warnings
import numpy as np, torch, matplotlib
matplotlib.rcParams.update({'figure.dpi': 60, 'savefig.dpi': 60})
random.seed(0); np.random.seed(0); torch.manual_seed(0)
"""
PROGRESS = re.compile(r'█|\|[-█]{5,}\||\d+\.\d+% \[\d+/\d+')

def _flags()->set:
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())

def _skipped(cell, flags)->bool:
    "Whether `nbdev_test` skips `cell` (a `#| notest`, `#| slow`... directive, or `#| eval: false`)"
    head = [l.strip() for l in cell.source.splitlines() if l.strip().startswith('#|')]
    return any(l[2:].strip() in flags or l.replace(' ', '') == '#|eval:false' for l in head)

def machine_paths()->dict:
    "Absolute paths of this machine that outputs must not show, and what stands for each"
    return {str(ROOT): '<repo>', tempfile.gettempdir(): '<tmp>', str(Path.home()): '~'}

def _clean_text(text:str)->str:
    "Each line as a terminal would show it (after its last carriage return), progress bars left out, paths replaced"
    lines = [line.rsplit('\r', 1)[-1] for line in text.split('\n')]
    text = '\n'.join(l for l in lines if not PROGRESS.search(l))
    for path, stand_in in sorted(machine_paths().items(), key=lambda kv: -len(kv[0])): text = text.replace(path, stand_in)
    return re.sub(r'\n{3,}', '\n\n', text)

def _clean_output(out)->dict|None:
    "The output as kept, or None to drop it"
    if out.output_type == 'stream':
        if out.name == 'stderr':
            kept = [l for l in ''.join(out.text).split('\n') if l.startswith(('note:', 'budget'))]
            if not kept: return None
            out.text = '\n'.join(kept) + '\n'
        out.text = _clean_text(''.join(out.text))
        return out if out.text.strip() else None
    for kind in ('text/plain', 'text/html', 'text/markdown'):
        if kind in out.get('data', {}):
            text = _clean_text(''.join(out.data[kind]))
            if kind == 'text/html' and '<progress' in text: return None
            out.data[kind] = text
    return out

def refresh(fname:Path, flags:set)->bool:
    "Run `fname` and write it back with its cleaned outputs; False (and the error printed) if a cell raised"
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb, shell = read_nb(fname), CaptureShell()
    os.chdir(fname.parent)
    shell.run_cell(SETUP)
    shell.run_all(nb, exc_stop=False, preproc=lambda cell: _skipped(cell, flags))
    errors = [o for c in nb.cells for o in c.get('outputs', []) if o.output_type == 'error']
    if errors:
        print(f"{fname}: {errors[0].ename}: {errors[0].evalue} (not written)", file=sys.stderr)
        return False
    for cell in nb.cells:
        if cell.cell_type == 'code': cell.outputs = [o for o in map(_clean_output, cell.get('outputs', [])) if o is not None]
    write_nb(nb, fname)
    return True

if __name__ == '__main__':
    names = [Path(a).resolve() for a in sys.argv[1:]] or sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
    failed = [n for n in names if not refresh(n, _flags())]
    sys.exit(1 if failed else 0)
