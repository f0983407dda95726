"""Smoke tests of bench/: every benchmark runs end to end in --quick mode (tiny model, one round) and prints its table.

Benchmarks, not timed tests: nothing here asserts a speed."""
import subprocess, sys
from pathlib import Path
import pytest
import torch

pytestmark = pytest.mark.slow  # every benchmark, end to end: `pytest -m "not slow"` leaves it out

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
    out = bench("cpu_sample").main(["--quick", "--no-cpu-time"])
    printed = capsys.readouterr().out
    assert _has_table(printed, "gpt_mini fp32", "transformers fp32", "Time to first token", "% of ceiling")
    names = [r["sampler"] for r in out["decode"]]
    assert names[:2] == ["gpt_mini fp32", "transformers fp32"]
    assert "gpt_mini fp32 packed (oneDNN)" in names or not torch.backends.mkldnn.is_available()
    assert all(r["tokens/s (median)"] > 0 for r in out["decode"])
    assert out["read_bandwidth_gbs"] > 0
    # the tiny model's weights fit in any last-level cache: the table must say that "% of ceiling" is no bound then
    assert "is no bound" in printed or bench("benchlib").last_level_cache_bytes() is None
    by = {r["sampler"]: r["MB read/token"] for r in out["decode"]}
    paths = {q["path"] for q in out["quality"]}
    # every path this machine can run is measured: a missing row is a failure, not a pass
    from gpt_mini.cpu import gemv_kernels
    has_int8 = any(engine != "none" for engine in torch.backends.quantized.supported_engines)
    try: has_kernel = gemv_kernels() is not None
    except RuntimeError: has_kernel = False  # no C compiler here: the bench says so instead of measuring
    assert ("gpt_mini int8" in names) == has_int8, names
    assert ("gpt_mini bf16 weights" in names) == has_kernel and ("gpt_mini fp32 (gpt_mini's kernel)" in names) == has_kernel, names
    if has_int8:  # the library's int8 path: its quality figure is there too
        assert 0.2 < by["gpt_mini int8"] / by["gpt_mini fp32"] < 0.4  # a byte a weight (+ scales) against four
        assert "int8" in paths
    if has_kernel:
        assert 0.45 < by["gpt_mini bf16 weights"] / by["gpt_mini fp32"] < 0.55 and "bf16" in paths  # two bytes a weight
        assert by["gpt_mini fp32 (gpt_mini's kernel)"] == by["gpt_mini fp32"]  # the same float32 bytes, another kernel
    assert all(0 <= q["top1_agreement"] <= 1 and q["tokens"] > 0 for q in out["quality"])

def test_cpu_train_quick(bench, capsys):
    out = bench("cpu_train").main(["--quick"])  # both measures: wall (2 threads) and CPU time (1 thread)
    assert _has_table(capsys.readouterr().out, "gpt_mini", "transformers", "% of matmul rate")
    names = [r["trainer"] for r in out["train"]]
    assert names[0] == "gpt_mini" and any(n.startswith("transformers") for n in names)
    assert out["matmul_gflops"] > 0 and all(r["tokens/s (median)"] > 0 for r in out["train"])

def test_cpu_train_allocators_quick(bench, capsys):
    out = bench("cpu_train").main(["--quick", "--allocators", "--no-cpu-time", "--no-bf16"])
    text = capsys.readouterr().out
    assert _has_table(text, "glibc malloc", "page faults per step", "peak RSS MiB") and "original recipe" in text
    rows = out["allocators"]
    assert rows[0]["allocator"] == "glibc malloc" and rows[0]["× glibc"] == 1.0
    assert all(r["tokens/s"] > 0 and r["peak RSS MiB"] > 50 for r in rows)
    assert any("keep_freed_memory" in r["allocator"] for r in rows)  # the library's own setting, beside the others

def test_gpu_train_quick_runs_anywhere(bench, capsys):
    bench("gpu_train").main(["--quick"])  # without CUDA: the same code on the CPU, tiny model
    assert _has_table(capsys.readouterr().out, "gpt_mini eager", "transformers eager", "MFU")

def test_gpu_train_says_not_measured_without_cuda(bench, capsys):
    if torch.cuda.is_available(): pytest.skip("a GPU is here: the full benchmark would run")
    out = bench("gpu_train").main([])
    assert out["measured"] is False and "not measured" in capsys.readouterr().out

def test_run_py_is_one_command(tmp_path):
    pytest.importorskip("transformers")
    report = tmp_path/"report.md"
    r = subprocess.run([sys.executable, str(BENCH/"run.py"), "--quick", "--only", "gpu_train", "--out", str(report)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = report.read_text()
    assert "Machine:" in text and "torch" in text and "GPU training" in text

# ---- the library paths the benchmarks measure (gpt_mini.model), checked fast on the tiny preset

def test_quantize_for_cpu_is_an_int8_copy():
    from gpt_mini.model import GPT, GPTConfig, generate
    from gpt_mini.cpu import quantize_for_cpu
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    q = quantize_for_cpu(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())   # every Linear is int8...
    assert isinstance(model.lm_head, torch.nn.Linear)                       # ...in the copy only
    x = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): ref, got = model(x), q(x)
    assert (ref - got).abs().max() < 0.1 * ref.abs().max()
    assert list(generate(q, [1, 2, 3], 6, seed=0)) == list(generate(q, [1, 2, 3], 6, seed=0))
    with pytest.raises(ValueError, match="int8 weights are for CPUs, and this model is on meta"):
        quantize_for_cpu(GPT(GPTConfig.from_preset("tiny")).to("meta"))  # (a GPU model, where there is no GPU)

def test_int8_linear_is_torch_ao_dynamic_quantization_without_its_python():
    import copy, warnings
    from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig
    from gpt_mini.model import GPT, GPTConfig, generate
    from gpt_mini.cpu import Int8Linear, quantize_for_cpu
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    ours = quantize_for_cpu(model)
    layers = [m for m in ours.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 4 * model.config.n_layer + 1  # every block's four projections and the head
    assert not any(hasattr(m, "_packed_params") for m in ours.modules())  # no torch.ao layer left
    x = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(): assert torch.equal(ao(x), ours(x))  # the same kernel on the same weights: bit for bit
    assert list(generate(ao, [1, 2, 3], 12, seed=0)) == list(generate(ours, [1, 2, 3], 12, seed=0))
    w, b = ours.lm_head.weight(), ours.lm_head.bias()
    assert w.shape == model.lm_head.weight.shape and w.dtype == torch.qint8 and b is None
    assert (w.dequantize() - model.lm_head.weight).abs().max() < model.lm_head.weight.abs().max() / 100

@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_pack_for_cpu_is_the_same_float32_model():
    from gpt_mini.model import GPT, GPTConfig, generate
    from gpt_mini.cpu import pack_for_cpu
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    packed = pack_for_cpu(model)
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())  # every Linear runs on oneDNN...
    assert isinstance(model.lm_head, torch.nn.Linear)                        # ...in the copy only
    x = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): torch.testing.assert_close(packed(x), model(x), atol=1e-4, rtol=0)
    # greedy text is unchanged, past the context too (the window slides and is re-read)
    assert list(generate(packed, [1, 2, 3], 80, temperature=0)) == list(generate(model, [1, 2, 3], 80, temperature=0))
    assert list(generate(packed, [1, 2, 3], 6, seed=0)) == list(generate(packed, [1, 2, 3], 6, seed=0))

def test_cpu_cross_entropy_matches_torch():
    import torch.nn.functional as F
    from gpt_mini.model import cross_entropy
    logits = torch.randn(260, 50257, generator=torch.Generator().manual_seed(0)).requires_grad_()  # three row blocks
    targets = torch.randint(0, 50257, (260,)); targets[::5] = -1
    ref = logits.detach().clone().requires_grad_()
    cross_entropy(logits, targets).backward(); F.cross_entropy(ref, targets, ignore_index=-1).backward()
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(ref, targets, ignore_index=-1))
    torch.testing.assert_close(logits.grad, ref.grad, rtol=1e-4, atol=1e-9)
