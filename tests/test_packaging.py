import subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, ".ci/render_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_import_from_any_folder(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import gpt_mini, gpt_mini.data; print(gpt_mini.__version__)"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == next(l.split("=")[1].strip() for l in (ROOT/"settings.ini").read_text().splitlines()
                                    if l.startswith("version"))

def test_wheel_holds_the_library_only(tmp_path):
    pytest.importorskip("build")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = tmp_path.glob("gpt_mini-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "gpt_mini/__init__.py" in names and "gpt_mini/data.py" in names
    top = {n.split("/")[0] for n in names}
    assert all(t == "gpt_mini" or t.endswith(".dist-info") for t in top), top
    assert not any(n.endswith(".ipynb") or "/tests/" in n for n in names)
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: torch" in meta and 'extra == "app"' in meta
    ep = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gpt-mini = gpt_mini.cli:main" in ep

INSTALL_GUARD = 'try:\n    import gpt_mini\nexcept ImportError:\n    %pip install -q "gpt_mini @ git+'

def test_every_notebook_starts_with_the_colab_install_cell():
    import json
    nbs = sorted((ROOT/"nbs").glob("*.ipynb")) + [ROOT/"index.ipynb"]
    assert len(nbs) > 1
    for nb in nbs:
        code = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        first = [("".join(c["source"])) for c in code[:2]]  # `#| default_exp` may come first
        assert any(INSTALL_GUARD in s for s in first), f"{nb.name} does not start with the guarded install cell"
        cell = next(s for s in first if INSTALL_GUARD in s)
        # a failed install stops "Run all" there, with a message, instead of an ImportError in the next cell
        assert "except ImportError: raise RuntimeError(\"Installing gpt_mini failed" in cell, nb.name
