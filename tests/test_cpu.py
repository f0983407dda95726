"""Fast CPU inference (chapter 15): the int8 copy, bf16 and float32 on gpt_mini's own kernel, and its build errors."""
import pytest
import torch

from gpt_mini.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny")).eval()


def _rounded_to_bf16(model):
    "The oracle: the same float32 model with every Linear weight rounded to bfloat16 and back."
    import copy
    ref = copy.deepcopy(model)
    for m in ref.modules():  # a new Parameter: the head's rounded copy no longer ties the (float32) token table
        if isinstance(m, torch.nn.Linear): m.weight = torch.nn.Parameter(m.weight.detach().bfloat16().float())
    return ref


def test_gemv_for_cpu_is_float32_math_on_bf16_weights(tiny_model):
    from gpt_mini.model import generate
    from gpt_mini.cpu import GemvLinear, gemv_for_cpu
    half = gemv_for_cpu(tiny_model)  # bf16 by default
    layers = [m for m in half.modules() if isinstance(m, GemvLinear)]
    assert len(layers) == 4 * tiny_model.config.n_layer + 1 and all(m.weight.dtype == torch.bfloat16 for m in layers)
    assert not any(type(m) is torch.nn.Linear for m in half.modules())
    assert isinstance(tiny_model.lm_head, torch.nn.Linear)  # the original is untouched
    ref = _rounded_to_bf16(tiny_model)
    ids = torch.randint(0, tiny_model.config.vocab_size, (1, 12))
    with torch.inference_mode():
        assert (half(ids) - ref(ids)).abs().max() < 1e-4  # a prompt: torch's product on the same rounded weights
        h = ref.hidden(ids)[:, -1:]
        assert (half.lm_head(h) - ref.lm_head(h)).abs().max() < 1e-4  # one row: the C kernel
    prompt = [1, 2, 3]  # decoding runs the kernel at every step
    assert list(generate(half, prompt, 30, temperature=0)) == list(generate(ref, prompt, 30, temperature=0))


def test_gemv_for_cpu_in_float32_is_the_same_model(tiny_model):
    from gpt_mini.model import generate
    from gpt_mini.cpu import GemvLinear, gemv_for_cpu
    streamed = gemv_for_cpu(tiny_model, torch.float32)
    assert all(m.weight.dtype == torch.float32 for m in streamed.modules() if isinstance(m, GemvLinear))
    with torch.inference_mode():
        h = tiny_model.hidden(torch.tensor([[5, 6, 7]]))[:, -1:]
        assert (streamed.lm_head(h) - tiny_model.lm_head(h)).abs().max() < 1e-5
    assert list(generate(streamed, [1, 2, 3], 30, temperature=0)) == list(generate(tiny_model, [1, 2, 3], 30, temperature=0))
    with pytest.raises(ValueError, match="float32 or bfloat16"): GemvLinear(torch.nn.Linear(4, 4), torch.float16)
    moved = GemvLinear(torch.nn.Linear(32, 8)).to("meta")  # off the CPU: never a host pointer into the C kernel
    assert moved(torch.empty(1, 1, 32, device="meta")).shape == (1, 1, 8)


@pytest.mark.parametrize("n, k", [(8, 32), (13, 40), (64, 96), (3, 1)])
def test_gemv_kernels_on_every_shape(n, k):
    from gpt_mini.cpu import gemv_kernels
    w, x, b = torch.randn(n, k), torch.randn(k), torch.randn(n)
    wb = w.bfloat16()
    for bias in (b, None):
        for kernel, weights, want in ((gemv_kernels().gemv_bf16, wb, wb.float() @ x), (gemv_kernels().gemv_f32, w, w @ x)):
            y = torch.full((n,), float("nan"))
            kernel(x.data_ptr(), weights.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(), n, k, 2)
            assert torch.allclose(y, want + (0 if bias is None else bias), atol=1e-4, rtol=1e-4), (n, k, kernel)


def test_gemv_kernels_say_in_one_line_why_they_cannot_build(monkeypatch, tmp_path):
    import gpt_mini.cpu as S
    monkeypatch.setattr(S, "_gemv_lib", None)  # as in a fresh process
    monkeypatch.setenv("GPT_MINI_CACHE", str(tmp_path))  # nothing built yet
    monkeypatch.setenv("CC", str(tmp_path/"no-such-cc"))
    with pytest.raises(RuntimeError, match="needs a C compiler") as e: S.gemv_kernels()
    assert "CC" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    with pytest.raises(RuntimeError, match="did not compile with false") as e: S.gemv_for_cpu(GPT(GPTConfig.from_preset("tiny")))
    assert "\n" not in str(e.value) and "--precision fp32" in str(e.value)
    assert not list(tmp_path.glob("kernels/*.so"))  # no half-built library left to load next time


@pytest.mark.slow
def test_auto_never_serves_int8_where_it_changes_the_model():
    """Chapter 15's breaker, on an untrained `small` model too (the chapter uses the trained one): float32 computes
    exactly the same model, int8's row scales are ruined (far over the bound), and `auto` serves something else."""
    import copy
    from gpt_mini.cpu import MAX_KL, cpu_sampling_copy, gemv_for_cpu, quality_vs_fp32, quantize_for_cpu
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("small")).eval()
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for block in broken.transformer.h:
            for norm, linear in ((block.ln_1, block.attn.c_attn), (block.ln_2, block.mlp.c_fc)):
                norm.weight[0] = norm.bias[0] = 0.0
                linear.weight[:, 0] = 1000 * linear.weight.abs().max()
    same = copy.deepcopy(model)
    with torch.no_grad():
        for block in same.transformer.h: block.ln_1.weight[0] = block.ln_1.bias[0] = block.ln_2.weight[0] = block.ln_2.bias[0] = 0.0
    ids = torch.randint(0, 50257, (2, 16))
    with torch.inference_mode(): assert torch.equal(broken(ids), same(ids))
    assert quality_vs_fp32(broken, quantize_for_cpu(broken))[0] > 3 * MAX_KL
    assert quality_vs_fp32(broken, gemv_for_cpu(broken))[0] < MAX_KL / 100
    served, why = cpu_sampling_copy(broken)
    assert not why.startswith("int8") and "int8 was" in why
