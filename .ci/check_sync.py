"""Fail when the notebooks and the library disagree, without touching the working tree.

Copies the project to a temporary folder, runs `nbdev_export` and `nbdev_clean` there (the top-level index.ipynb
included), and lists every file those commands would change.
"""
import filecmp, json, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
bindir = Path(sys.executable).parent

def tool(name): return str(bindir/name) if (bindir/name).exists() else name

def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)/"proj"
        shutil.copytree(root, work, ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "runs", "__pycache__", "*.egg-info", "build", "dist", "_proc", "_docs", "test-artifacts"))
        for cmd in ([tool("nbdev_export")], [tool("nbdev_clean")], [tool("nbdev_clean"), "--fname", "index.ipynb"]):
            r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if r.returncode: print(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}"); return 1
        changed = []
        for f in sorted([*work.glob("gpt_mini/**/*.py"), *work.glob("nbs/**/*.ipynb"), work/"index.ipynb"]):
            rel = f.relative_to(work)
            if ".ipynb_checkpoints" in rel.parts: continue
            if not (root/rel).exists() or not filecmp.cmp(f, root/rel, shallow=False): changed.append(str(rel))
        for f in root.glob("gpt_mini/**/*.py"):  # a module whose notebook is gone
            if not (work/f.relative_to(root)).exists(): changed.append(f"{f.relative_to(root)} (no notebook exports it)")
    # nbformat 4.5 wants a unique id on every cell (Jupyter and Colab warn, and a later nbformat will refuse); a cell
    # written by a script rather than by Jupyter can lack one, and nbdev_clean does not add it
    for f in sorted([*root.glob("nbs/*.ipynb"), root/"index.ipynb"]):
        ids = [c.get("id") for c in json.loads(f.read_text(encoding="utf-8"))["cells"]]
        if None in ids or len(set(ids)) != len(ids):
            bad = [i for i, x in enumerate(ids) if x is None or ids.count(x) > 1]
            changed.append(f"{f.relative_to(root)} (cells {bad} lack a unique id: open and save it in Jupyter)")
    if changed:
        print("Notebooks and library are out of step. Run `nbdev_export && nbdev_clean && nbdev_clean --fname index.ipynb`"
              " and commit:\n  " + "\n  ".join(changed))
        return 1
    print("check_sync: gpt_mini/ matches the notebooks, and every notebook is clean.")
    return 0

if __name__ == "__main__": sys.exit(main())
