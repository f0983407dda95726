"""Smoke tests of bench/: every benchmark runs end to end in --quick mode (tiny model, one round) and prints its table.

Benchmarks, not timed tests: nothing here asserts a speed."""
import subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT/"bench"

@pytest.fixture
def bench(monkeypatch):
    "Import bench scripts as modules; restore torch's thread count afterwards (the scripts set it)."
    pytest.importorskip("transformers")  # the peer every benchmark compares against
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()
    import importlib
    yield importlib.import_module
    torch.set_num_threads(threads)

def _has_table(text: str, *words) -> bool:
    return "| " in text and "|---" in text and all(w in text for w in words)

def test_cpu_sample_quick(bench, capsys):
    out = bench("cpu_sample").main(["--quick"])
    printed = capsys.readouterr().out
    assert _has_table(printed, "gpt_mini fp32", "transformers fp32", "Time to first token", "% of ceiling")
    names = [r["sampler"] for r in out["decode"]]
    assert names[:2] == ["gpt_mini fp32", "transformers fp32"]
    assert all(r["tokens/s (median)"] > 0 for r in out["decode"])
    assert out["read_bandwidth_gbs"] > 0
    if "gpt_mini int8" in names:  # the library's int8 path: its quality figure is there too
        q = out["quality"][0]
        assert 0 <= q["top1_agreement"] <= 1 and q["tokens"] > 0

def test_cpu_train_quick(bench, capsys):
    out = bench("cpu_train").main(["--quick"])
    assert _has_table(capsys.readouterr().out, "gpt_mini", "transformers", "% of matmul rate")
    assert {r["trainer"] for r in out["train"]} == {"gpt_mini", "transformers"}
    assert out["matmul_gflops"] > 0 and all(r["tokens/s (median)"] > 0 for r in out["train"])

def test_gpu_train_quick_runs_anywhere(bench, capsys):
    out = bench("gpu_train").main(["--quick"])  # without CUDA: the same code on the CPU, tiny model
    assert _has_table(capsys.readouterr().out, "gpt_mini eager", "transformers eager", "MFU")

def test_gpu_train_says_not_measured_without_cuda(bench, capsys):
    if torch.cuda.is_available(): pytest.skip("a GPU is here: the full benchmark would run")
    out = bench("gpu_train").main([])
    assert out["measured"] is False and "not measured" in capsys.readouterr().out

def test_run_py_is_one_command(tmp_path):
    pytest.importorskip("transformers")
    report = tmp_path/"report.md"
    r = subprocess.run([sys.executable, str(BENCH/"run.py"), "--quick", "--only", "cpu_train", "--out", str(report)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = report.read_text()
    assert "Machine:" in text and "torch" in text and "CPU training" in text
