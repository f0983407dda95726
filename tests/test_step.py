"""One training step's parts (chapter 05): number format, memory, the optimizer, the loss of a measurement."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gpt_mini.step as S
from gpt_mini.model import GPT, GPTConfig
from gpt_mini.step import dist_env, make_optimizer, mean_loss, pick_precision, train_step


def test_auto_precision_on_a_cpu_is_measured(monkeypatch):
    cpu = torch.device("cpu")
    for speedup, expect in ((2.6, "bf16"), (1.29, "fp32"), (0.5, "fp32")):
        monkeypatch.setattr(S, "cpu_bf16_speedup", lambda s=speedup: s)
        p = pick_precision(cpu)
        assert p.name == expect and f"{speedup:.2f}x" in p.why
    assert pick_precision(cpu, "fp32").why == ""  # asked for: nothing to explain


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_takes_big_buffers_from_the_heap():
    "By default a 64 MB buffer is an mmap'd block (returned to the kernel on free, page-faulted in again next time)."
    probe = textwrap.dedent("""
        import ctypes, sys, torch
        import gpt_mini.step as S
        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]
        libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MallInfo2
        if sys.argv[1] == "keep": assert S.keep_freed_memory()
        buffer = torch.ones(64 * 2**20 // 4)
        print(libc.mallinfo2().hblkhd)""")
    mmapped = {mode: int(subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True,
                                        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}).stdout.split()[-1])
               for mode in ("default", "keep")}
    assert mmapped["default"] >= 64 * 2**20 and mmapped["keep"] < 64 * 2**20, mmapped


def test_weight_decay_on_2d_only():
    model = GPT(GPTConfig.from_preset("tiny"))
    opt = make_optimizer(model, 1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_precision_choice(monkeypatch):
    # the rule, against set speeds rather than the implementation's own measurement: bf16 only with a clear margin
    for speedup, chosen in ((2.6, "bf16"), (1.35, "bf16"), (1.2, "fp32"), (0.57, "fp32")):
        monkeypatch.setattr(S, "cpu_bf16_speedup", lambda speedup=speedup: speedup)
        precision = pick_precision(torch.device("cpu"))
        assert precision.name == chosen and f"{speedup:.2f}x" in precision.why, (speedup, precision)
        assert not precision.scaler.is_enabled()
    assert pick_precision(torch.device("cpu"), "fp32").name == "fp32" and pick_precision(torch.device("cpu"), "bf16").name == "bf16"
    with pytest.raises(ValueError, match="CUDA"): pick_precision(torch.device("cpu"), "fp16")


def test_mean_loss_is_per_token_and_leaves_the_model_training():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", dropout=0.5)).train()
    x = torch.randint(0, 50257, (3, 17))
    parts = [(x[:2, :-1], x[:2, 1:]), (x[2:, :-1], x[2:, 1:])]
    whole = mean_loss(model, [(x[:, :-1], x[:, 1:])])
    assert abs(mean_loss(model, parts) - whole) < 1e-5  # 2 + 1 windows weigh as 3, not as two equal halves
    assert mean_loss(model, parts) == mean_loss(model, parts) and model.training  # no dropout while measuring


def test_a_step_lowers_the_loss_of_its_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny"))
    opt, fp32 = make_optimizer(model, 3e-3), pick_precision(torch.device("cpu"), "fp32")
    x = torch.randint(0, 50257, (4, 33))
    losses = [train_step(model, opt, iter([(x[:, :-1], x[:, 1:])]), fp32)[0] for _ in range(10)]
    assert abs(losses[0] - math.log(50257)) < 0.3 and losses[-1] < losses[0] - 1, losses


def test_dist_env_reads_torchruns_variables(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"): monkeypatch.delenv(k, raising=False)
    assert dist_env() == (0, 0, 1)
    monkeypatch.setenv("RANK", "3"); monkeypatch.setenv("LOCAL_RANK", "1"); monkeypatch.setenv("WORLD_SIZE", "4")
    assert dist_env() == (3, 1, 4)
