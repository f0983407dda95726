"""GPU training: GPT-2 124M in bf16, gpt_mini against transformers' GPT2LMHeadModel, same weights, same run; MFU.

    python bench/gpu_train.py             # on a CUDA machine: 16 × 1024 and the original recipe's 8 × 256 (≈ 5 minutes)
    python bench/gpu_train.py --recipe    # also: the original recipe end to end, time until train loss < 0.1
    python bench/gpu_train.py --quick     # without CUDA: the same code on the CPU with a tiny model (no figures)

One step = bf16 autocast forward with the loss, backward, clip to norm 1, fused AdamW, zero the gradients: the same
step for both models (gpt_mini's optimizer is `gpt_mini.step.make_optimizer`'s, as in training; fp16 on GPUs without
bf16 runs without a gradient scaler, which changes nothing for the timing). Cases, interleaved round by round:
gpt_mini eager, gpt_mini `torch.compile`d, transformers eager (its SDPA attention), transformers compiled.

MFU = tokens/s × FLOPs per token / the bf16 matmul rate *measured on the same GPU in the same run* (an 8192² matmul,
the best of a few), not the datasheet peak, so it says how close training gets to what this GPU can actually multiply.
FLOPs per token = 6·N + 12·n_layer·T·C (N: the Linear weights and the output head; attention counted in full).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

import contextlib  # noqa: E402
import time  # noqa: E402
import torch  # noqa: E402

from gpt_mini.model import GPT, GPTConfig  # noqa: E402
from cpu_train import train_flops_per_token, batches  # noqa: E402

def make_opt(model, device):
    try:
        from gpt_mini.step import make_optimizer
        return make_optimizer(model, 3e-4, 0.1, (0.9, 0.95), device)
    except ImportError:
        return torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                 **({"fused": True} if device.type == "cuda" else {}))

def step_fn(model, opt, device, dtype, hf: bool):
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext
    def step(x, y):
        with autocast():
            loss = model(input_ids=x, labels=x).loss if hf else model(x, y)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    return step

def timer(step, data, n_steps, tokens_per_step, sync):
    i = [0]
    def run():
        sync(); t0 = time.perf_counter()
        for _ in range(n_steps):
            x, y = data[i[0] % len(data)]; i[0] += 1
            step(x, y)
        sync()
        return n_steps * tokens_per_step / (time.perf_counter() - t0)
    return run

def peak_matmul(device, dtype, quick) -> float:
    n = 256 if quick else 8192
    return max(B.matmul_gflops(n, dtype=dtype, device=device, reps=2 if quick else 20) for _ in range(1 if quick else 5))

def bench_shape(cfg, batch, seq, device, dtype, rounds, n_steps, compile_, quick):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data = [(x.to(device), y.to(device)) for x, y in batches(cfg, batch, seq, 4, quick)]
    torch.manual_seed(0)
    ours = GPT(cfg).to(device).train()
    hf = ours.to_hf().to(device).train()
    cases = {"gpt_mini eager": timer(step_fn(ours, make_opt(ours, device), device, dtype, False), data, n_steps, batch * seq, sync),
             "transformers eager": timer(step_fn(hf, make_opt(hf, device), device, dtype, True), data, n_steps, batch * seq, sync)}
    if compile_:
        ours_c = GPT(cfg).to(device).train(); ours_c.load_state_dict(ours.state_dict())
        hf_c = ours_c.to_hf().to(device).train()
        cases["gpt_mini compiled"] = timer(step_fn(torch.compile(ours_c), make_opt(ours_c, device), device, dtype, False),
                                           data, n_steps, batch * seq, sync)
        cases["transformers compiled"] = timer(step_fn(torch.compile(hf_c), make_opt(hf_c, device), device, dtype, True),
                                               data, n_steps, batch * seq, sync)
    res = B.interleave(cases, rounds, warmup=2 if compile_ else 1)  # compiled graphs settle in the first calls
    del ours, hf, cases
    if device.type == "cuda": torch.cuda.empty_cache()
    return res

def recipe(device, quick) -> dict:
    "The original recipe end to end (gpt_mini.train, preset 'original'): wall time until a step's train loss < 0.1."
    import tempfile
    from gpt_mini.train import TrainConfig, train
    with tempfile.TemporaryDirectory() as tmp:
        changes = dict(out=str(Path(tmp)/"original"), progress=False, live_plot=False, ckpt_every=0, sample_tokens=20)
        if quick: changes.update(model="tiny", seq_len=32, steps=3, warmup=1, eval_every=0, eval_batches=1)
        cfg = TrainConfig.from_preset("original", **changes)
        t0 = time.perf_counter()
        r = train(cfg)
        wall = time.perf_counter() - t0
    return {"stop reason": r.stop_reason, "steps": r.steps_done, "final train loss": r.final_loss,
            "training s": r.elapsed, "wall s (incl. setup)": wall,
            "tokens/s": r.steps_done * cfg.tokens_per_step / r.elapsed if r.elapsed else float("nan")}

def main(argv=None) -> dict:
    p = B.base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps per measurement (default 10)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--recipe", action="store_true", help="also time the original recipe until train loss < 0.1")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    info = B.machine_info()
    if not cuda and not args.quick:
        md = B.report("GPU training", [{"case": "all", "result": "not measured: no CUDA GPU on this machine"}])
        return {"machine": info, "measured": False, "markdown": md}
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (torch.float16 if cuda else torch.float32)
    quick = args.quick
    cfg = GPTConfig.from_preset("tiny" if quick else "gpt2")
    shapes = [(2, 32)] if quick else [(16, 1024), (8, 256)]
    rounds, n_steps = args.rounds or (1 if quick else 5), args.steps or (1 if quick else 10)
    compile_ = cuda and not args.no_compile
    peak = peak_matmul(device, dtype, quick) if cuda else B.matmul_gflops(256)
    rows = []
    for batch, seq in shapes:
        B.log(f"gpu_train: batch {batch} × {seq}")
        res = bench_shape(cfg, batch, seq, device, dtype, rounds, n_steps, compile_, quick)
        fpt = train_flops_per_token(cfg, seq)
        theirs = res["transformers eager"]
        for n, xs in res.items():
            rows.append({"batch × seq": f"{batch} × {seq}", "trainer": n, "tokens/s (median)": B.med(xs),
                         "range": B.spread(xs), "× transformers eager": B.paired_ratio(xs, theirs),
                         "TFLOP/s": B.med(xs) * fpt / 1e12, "MFU %": 100 * B.med(xs) * fpt / 1e9 / peak})
    where = f"{info.get('gpu', 'CPU (quick check only, not a GPU figure)')}"
    md = B.report(f"GPU training: {'tiny (quick)' if quick else 'GPT-2 124M'}, {str(dtype).split('.')[-1]} autocast, "
                  f"{where}, {rounds} interleaved rounds of {n_steps} steps", rows,
                  [f"peak = measured {str(dtype).split('.')[-1]} matmul rate in this run: {peak / 1e3:.1f} TFLOP/s"])
    out = {"machine": info, "measured": cuda, "peak_gflops": peak, "train": rows}
    if args.recipe:
        r = recipe(device, quick)
        md += B.report("The original recipe end to end (GPT-2 124M, 8 × 256, until a step's train loss < 0.1)", [r])
        out["recipe"] = r
    out["markdown"] = md
    return out

if __name__ == "__main__":
    main()
