#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb's markdown cells.

nbdev_readme would do this, but it needs quarto, which cannot be installed offline here;
tests/test_readme.py fails when the two are out of step. Run: python tools/sync_readme.py"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def readme_text(nb=root/'nbs'/'index.ipynb'):
    "The markdown cells of `nb`, joined by blank lines"
    cells = json.loads(Path(nb).read_text())['cells']
    return '\n\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown') + '\n'

if __name__ == '__main__':
    (root/'README.md').write_text(readme_text())
    print('wrote', root/'README.md', file=sys.stderr)
