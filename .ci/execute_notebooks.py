"""Run every notebook top to bottom and save its outputs into it, so that GitHub (and anyone opening the file)
shows the plots, logs and samples. `#| slow` and `#| eval: false` cells are skipped, as `nbdev_test` skips them.
Usage: python .ci/execute_notebooks.py [NOTEBOOK ...]   (default: nbs/*.ipynb and index.ipynb); then nbdev_clean."""
import os
import re
import sys
import time
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"^#\|\s*(slow\b|eval:\s*false)", re.M)


def skipped(cell) -> bool:
    return cell.cell_type != "code" or bool(SKIP.search(cell.source))


def execute(path: Path):
    nb = read_nb(path)
    cwd = os.getcwd()
    os.chdir(path.parent)  # as nbdev_test runs them: chapters write runs/ next to themselves
    try:
        t0 = time.perf_counter()
        CaptureShell(path).run_all(nb, exc_stop=True, preproc=skipped)
    finally: os.chdir(cwd)
    write_nb(nb, path)
    print(f"{path.relative_to(ROOT)}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT/"nbs").glob("*.ipynb")) + [ROOT/"index.ipynb"]
    for p in paths: execute(p)
