"""Run every chapter the way Colab opens it: alone, in an empty folder, on Colab's own stack, "Run all" to the end.

    python .ci/colab_alone.py                      # every chapter and index.ipynb
    python .ci/colab_alone.py nbs/07_sampling.ipynb  # some of them
    PYTHON=python3.13 VENV=/tmp/colab-venv python .ci/colab_alone.py

It builds (once) a virtual environment from `.ci/colab-stack.txt` with `$PYTHON` (default python3.13), installs this
checkout into it as Colab's install cell would (without touching the stack's torch), then copies each notebook into a
fresh temporary folder of its own and executes it there with nbclient in a real kernel, slow cells included (Colab
runs every cell). Nothing is shared between chapters: no run folder, no cache (each gets an empty $GPT_MINI_CACHE), so
a chapter that needs the trained model trains it, as it would in Colab. Only the corpus and tiktoken's files come from
../shared, since this machine has no internet. Prints each chapter's time and the first error, and exits 1 if any
chapter stops before its last cell."""
import os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent/"shared").resolve()
VENV = Path(os.environ.get("VENV", Path(tempfile.gettempdir())/"gpt_mini-colab-venv"))
RUNNER = r'''
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
nbformat.write(nb, sys.argv[1])
'''


def venv_python() -> Path:
    py = VENV/"bin"/"python"
    if not py.exists():
        subprocess.run([os.environ.get("PYTHON", "python3.13"), "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(ROOT/".ci"/"colab-stack.txt")], check=True)
        # as the chapters' install cell does: the project, leaving the stack's torch alone
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "tiktoken", "safetensors", "filelock", "tqdm",
                        "gradio_client", "huggingface_hub"], check=True)
    return py


def run_alone(py: Path, notebook: Path) -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)/"content"; work.mkdir()  # Colab's working folder, empty but for the notebook
        target = work/notebook.name
        shutil.copy(notebook, target)
        env = {**os.environ, "GPT_MINI_CACHE": str(Path(d)/"cache"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
               "GPT_MINI_DATA": str(SHARED/"data"/"tinyshakespeare.txt"), "TIKTOKEN_CACHE_DIR": str(SHARED/"tiktoken_cache"),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        t0 = time.perf_counter()
        r = subprocess.run([str(py), "-c", RUNNER, str(target)], cwd=work, env=env, capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        # nbclient's CellExecutionError quotes the cell, then the traceback: its last "SomethingError: ..." line says why
        errors = [l.strip() for l in lines if re.match(r"^\s*[\w.]*(Error|Exception|Interrupt)\b.*:", l)]
        error = "" if r.returncode == 0 else (errors or lines or ["?"])[-1][:500]
        return r.returncode == 0, time.perf_counter() - t0, error


def main(argv: list[str]) -> int:
    notebooks = [Path(a).resolve() for a in argv] or sorted((ROOT/"nbs").glob("*.ipynb")) + [ROOT/"index.ipynb"]
    py = venv_python()
    print(subprocess.run([str(py), "-c", "import sys, torch, ipywidgets, gradio; print('Python', sys.version.split()[0], "
                          "'| torch', torch.__version__, '| ipywidgets', ipywidgets.__version__, '| gradio', gradio.__version__)"],
                         capture_output=True, text=True).stdout.strip(), flush=True)
    failed, total = [], 0.0
    for nb in notebooks:
        ok, seconds, error = run_alone(py, nb)
        total += seconds
        print(f"{nb.relative_to(ROOT)}: {'ok' if ok else 'STOPPED'} in {seconds:.0f} s" + ("" if ok else f": {error}"), flush=True)
        if not ok: failed.append(nb.name)
    print(f"{len(notebooks) - len(failed)} of {len(notebooks)} ran to their last cell, alone, in {total / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
