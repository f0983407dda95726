"""CPU training: gpt_mini against transformers' GPT2LMHeadModel, same weights, same batches, same run.

    python bench/cpu_train.py           # the 'small' config, batch 8 × 256, fp32 (about 2.5 minutes on 2 quiet cores)
    python bench/cpu_train.py --quick   # a tiny model, one round: checks that it runs
    python bench/cpu_train.py --model gpt2 --rounds 2 --steps 1 --no-cpu-time   # GPT-2 124M at the recipe's 8 × 256

With `--model gpt2` it also reports the peak memory of one training step, gpt_mini's step under each memory allocator
found on the machine (glibc's malloc, tcmalloc, jemalloc: each in a fresh process), and the wall time the original
recipe (~4,578 steps of 8 × 256 tokens until the loss is below 0.1) would need at the measured speed.

One training step = forward with the loss, backward, gradient clipping to norm 1, an AdamW step, zero the gradients.
- gpt_mini: the library's own `gpt_mini.step.make_optimizer` and `train_step` (what `gpt-mini train` runs);
- transformers: `model(input_ids=x, labels=x).loss` (transformers shifts the labels itself) with torch's fused AdamW,
  the optimizer its `Trainer` picks by default on torch ≥ 2.8; and, as a second peer, the same with a plain
  `torch.optim.AdamW(...)` as a hand-written loop would have it.
Same learning rate, betas and weight decay everywhere. Each measurement times `--steps` steps.

FLOPs per token: 6·N + 12·n_layer·T·C, with N the parameters that take part in matrix multiplies (the blocks'
Linear weights and the output head; embeddings are lookups) and the second term the attention scores and weighted
sums, counted in full as is customary (causal masking would halve it). The fp32 matmul rate (a 1024² matmul) is
measured in the same rounds and is the 100% of the "% of matmul rate" column.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

import torch  # noqa: E402

from gpt_mini.model import GPT, GPTConfig  # noqa: E402

LR, BETAS, WD = 6e-4, (0.9, 0.95), 0.1

def matmul_params(cfg: GPTConfig) -> int:
    "Parameters that are multiplied (not looked up) per token: 12·C² per block (q,k,v, proj, MLP) and the head."
    return cfg.n_layer * 12 * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd

def train_flops_per_token(cfg: GPTConfig, seq_len: int) -> float:
    return 6 * matmul_params(cfg) + 12 * cfg.n_layer * seq_len * cfg.n_embd

def batches(cfg, batch, seq, n, quick=False):
    "`n` fixed (x, y) batches of real text (tiny Shakespeare's training split), or random ids when it is missing."
    g = torch.Generator().manual_seed(0)
    try:
        from gpt_mini.data import load_dataset
        ids = torch.as_tensor(load_dataset().train, dtype=torch.long)
    except Exception as e:  # pragma: no cover - only without the corpus
        B.log(f"cpu_train: no corpus ({e}); random token ids"); ids = torch.randint(0, cfg.vocab_size, (100_000,), generator=g)
    out = []
    for _ in range(n):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + seq] for s in starts]); y = torch.stack([ids[s + 1:s + seq + 1] for s in starts])
        out.append((x, y))
    return out

def ours_step(model, dtype: str = "fp32"):
    "gpt_mini's training step as the library runs it (falls back to a plain loop if gpt_mini.step is missing)."
    try:
        from gpt_mini.step import make_optimizer, train_step, pick_precision
    except ImportError:  # pragma: no cover
        opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)
        return plain_step(lambda x, y: model(x, y)[1], model, opt)
    device = torch.device("cpu")
    opt, precision = make_optimizer(model, LR, WD, BETAS, device), pick_precision(device, dtype)
    return lambda x, y: train_step(model, opt, iter([(x, y)]), precision, grad_clip=1.0)

def plain_step(loss_fn, model, opt):
    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    return step

def hf_step(hf, fused: bool, bf16: bool = False):
    opt = torch.optim.AdamW(hf.parameters(), lr=LR, betas=BETAS, weight_decay=WD, **({"fused": True} if fused else {}))
    # a transformers user passes labels = input ids and lets the model shift them by one
    if not bf16: return plain_step(lambda x, y: hf(input_ids=x, labels=x).loss, hf, opt)
    def loss(x, y):  # what the Trainer's bf16=True does on a CPU: autocast around the forward
        with torch.autocast("cpu", dtype=torch.bfloat16): return hf(input_ids=x, labels=x).loss
    return plain_step(loss, hf, opt)

def native_bf16_cpu() -> bool:
    "Does this CPU multiply bf16 in hardware (AVX-512 BF16 or AMX)? Elsewhere bf16 is emulated, and slower than fp32."
    try: flags = Path("/proc/cpuinfo").read_text()
    except OSError: return False
    return " avx512_bf16" in flags or " amx_bf16" in flags

def timer(step, data, n_steps, tokens_per_step, clock):
    i = [0]
    def go():
        for _ in range(n_steps):
            x, y = data[i[0] % len(data)]; i[0] += 1
            step(x, y)
    return lambda: n_steps * tokens_per_step / B.timed(go, clock)

def fused_adamw_on_cpu() -> bool:
    try: torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True); return True
    except (RuntimeError, TypeError, ValueError): return False

def measure(cfg, data, batch, seq, rounds, n_steps, clock, mm_n, bf16=False):
    torch.manual_seed(0)
    ours = GPT(cfg).train()
    cases = {"gpt_mini": timer(ours_step(ours), data, n_steps, batch * seq, clock)}
    if fused_adamw_on_cpu():
        cases["transformers, fused AdamW (Trainer default)"] = timer(hf_step(ours.to_hf().train(), True), data, n_steps, batch * seq, clock)
    cases["transformers, plain AdamW"] = timer(hf_step(ours.to_hf().train(), False), data, n_steps, batch * seq, clock)
    if bf16:  # the same comparison in bf16 autocast, each against its own kind
        torch.manual_seed(0)
        ours16 = GPT(cfg).train()
        cases["gpt_mini, bf16 autocast"] = timer(ours_step(ours16, "bf16"), data, n_steps, batch * seq, clock)
        cases["transformers, bf16 autocast, fused AdamW"] = timer(hf_step(ours16.to_hf().train(), fused_adamw_on_cpu(), True),
                                                                data, n_steps, batch * seq, clock)
    if mm_n: cases["fp32 matmul GFLOP/s"] = lambda: B.matmul_gflops(mm_n)
    if mm_n and bf16: cases["bf16 matmul GFLOP/s"] = lambda: B.matmul_gflops(mm_n, torch.bfloat16)
    res = B.interleave(cases, rounds, warmup=1)
    peak = B.med(res.pop("fp32 matmul GFLOP/s")) if mm_n else None
    # bf16 rows against the bf16 rate: with AMX it is many times the fp32 one, without it about half
    peak16 = B.med(res.pop("bf16 matmul GFLOP/s")) if mm_n and bf16 else None
    refs = [n for n in res if n.startswith("transformers") and "bf16" not in n]  # fused-AdamW peer, then the plain loop
    fpt = train_flops_per_token(cfg, seq)
    rows = []
    for n, xs in res.items():
        row = {"trainer": n, "tokens/s (median)": B.med(xs), "range": B.spread(xs)}
        for ref in refs: row["× " + ref.split(" (")[0]] = B.paired_ratio(xs, res[ref])
        if bf16: row["× transformers bf16"] = (B.paired_ratio(xs, res["transformers, bf16 autocast, fused AdamW"])
                                             if "bf16" in n else "")
        if peak:
            own = peak16 if "bf16" in n else peak
            row.update({"GFLOP/s": B.med(xs) * fpt / 1e9, "% of matmul rate": 100 * B.med(xs) * fpt / 1e9 / own})
        rows.append(row)
    return rows, peak, peak16

ALLOCATORS = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}
ORIGINAL_TOKENS = 4578 * 8 * 256  # where the original recipe crossed a training loss of 0.1

def find_allocator(lib: str) -> str | None:
    "The path of a shared allocator library (Debian: libtcmalloc-minimal4, libjemalloc2), or None."
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if os.path.exists(f"{d}/{lib}"): return f"{d}/{lib}"
    return None

CHILD = r"""
import json, resource, sys, time, torch
from gpt_mini.model import GPT, GPTConfig
from gpt_mini.step import make_optimizer, train_step, pick_precision
model_name, batch, seq, dtype, steps, threads, keep = sys.argv[1:8]
torch.set_num_threads(int(threads)); torch.manual_seed(0)
if keep == "keep":
    from gpt_mini.step import keep_freed_memory; keep_freed_memory()
model = GPT(GPTConfig.from_preset(model_name)).train(); device = torch.device("cpu")
opt, precision = make_optimizer(model, 6e-4, 0.1, (0.9, 0.95), device), pick_precision(device, dtype)
x = torch.randint(0, model.config.vocab_size, (int(batch), int(seq))); y = torch.roll(x, -1, 1)
def high_water_mib():  # this process's peak resident memory (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
before = high_water_mib()
train_step(model, opt, iter([(x, y)]), precision, grad_clip=1.0)  # the first step allocates the optimizer state
times = []
for _ in range(int(steps)):
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    train_step(model, opt, iter([(x, y)]), precision, grad_clip=1.0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    times.append((time.perf_counter() - t, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
print(json.dumps({"before_step_mib": before, "peak_mib": high_water_mib(), "times": times}))
"""

def child_step(model_name: str, batch: int, seq: int, dtype: str, steps: int, threads: int, preload: str | None,
               keep: bool = False) -> dict:
    """gpt_mini's training step in a fresh process (optionally under another allocator, or with glibc told to keep
    freed memory as `gpt-mini train` does): times, page faults, peak RSS."""
    env = {**os.environ, **({"LD_PRELOAD": preload} if preload else {})}
    if not preload: env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", CHILD, model_name, str(batch), str(seq), dtype, str(steps), str(threads),
                          "keep" if keep else "-"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

def allocator_rows(model_name, batch, seq, steps, threads) -> list[dict]:
    "tokens/s, system time and page faults per step of gpt_mini's fp32 step under each allocator found (interleaved)."
    found = {"glibc malloc": None, "glibc + keep_freed_memory (gpt-mini train)": None,
             **{n: find_allocator(lib) for n, lib in ALLOCATORS.items()}}
    found = {n: p for n, p in found.items() if n.startswith("glibc") or p}
    runs = {n: [] for n in found}
    for _ in range(2):  # two interleaved rounds: the machine's load drifts
        for n, p in found.items():
            runs[n].append(child_step(model_name, batch, seq, "fp32", max(2, steps), threads, p, keep="keep_freed" in n))
    rows, base = [], None
    for n, rs in runs.items():
        step_s = B.med([t[0] for r in rs for t in r["times"]])
        row = {"allocator": n, "s per step (median)": step_s, "tokens/s": batch * seq / step_s,
               "system s per step": B.med([t[1] for r in rs for t in r["times"]]),
               "page faults per step": B.med([t[2] for r in rs for t in r["times"]]),
               "peak RSS MiB": max(r["peak_mib"] for r in rs)}
        base = base or row["tokens/s"]
        row["× glibc"] = row["tokens/s"] / base
        rows.append(row)
    return rows

def main(argv=None) -> dict:
    p = B.base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per measurement (default 2, quick 1)")
    p.add_argument("--batch", type=int, default=None); p.add_argument("--seq", type=int, default=None)
    p.add_argument("--model", default=None, help="model preset: small (default) or gpt2 (GPT-2 124M)")
    p.add_argument("--allocators", action="store_true", help="also time the step under tcmalloc/jemalloc (default with gpt2)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="also compare in bf16 autocast (default: when the CPU has native bf16)")
    args = p.parse_args(argv)
    if args.bf16 is None: args.bf16 = native_bf16_cpu()
    quick = args.quick
    rounds, n_steps = args.rounds or (1 if quick else 3), args.steps or (1 if quick else 2)
    model_name = args.model or ("tiny" if quick else "small")
    cfg = GPTConfig.from_preset(model_name)
    batch, seq = args.batch or (2 if quick else 8), args.seq or (32 if quick else 256)
    what = {"tiny": "tiny config", "small": "small config", "gpt2": "GPT-2 124M"}.get(model_name, model_name) + (" (quick)" if quick else "")
    info = B.machine_info()
    B.log(f"cpu_train: {what}, batch {batch} × {seq}, {rounds} rounds of {n_steps} steps")
    data = batches(cfg, batch, seq, 8, quick)
    mm_n = 256 if quick else 1024
    fpt = train_flops_per_token(cfg, seq)

    with B.threads(args.threads):
        rows, peak, peak16 = measure(cfg, data, batch, seq, rounds, n_steps, "wall", mm_n, bf16=args.bf16)
    md = B.report(f"CPU training: {what} ({cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} dim, vocab "
                  f"{cfg.vocab_size}), batch {batch} × {seq}, {'fp32 and bf16 autocast' if args.bf16 else 'fp32'}, AdamW + clipping, "
                  f"{args.threads} threads, wall clock, "
                  f"{rounds} interleaved rounds of {n_steps} steps", rows,
                  [f"{fpt / 1e6:.1f} MFLOP per token (6·N + 12·L·T·C, N = {matmul_params(cfg) / 1e6:.1f}M multiplied "
                   f"parameters); fp32 matmul rate measured in the same rounds: {peak:.0f} GFLOP/s ({mm_n}² matmul, "
                   f"{args.threads} threads)"] + ([f"bf16 rows: the % is of the bf16 matmul rate, measured the same way: {peak16:.0f} "
                                                  f"GFLOP/s ({peak16 / peak:.2f}× fp32); × transformers bf16 compares each "
                                                  "with its own kind"] if args.bf16 else []))
    out = {"machine": info, "matmul_gflops": peak, "matmul_gflops_bf16": peak16, "flops_per_token": fpt, "train": rows}
    if model_name == "gpt2" or args.allocators:
        alloc = allocator_rows(model_name, batch, seq, n_steps, args.threads)
        out["allocators"] = alloc
        ours = next(r["tokens/s (median)"] for r in rows if r["trainer"] == "gpt_mini")
        best = max(alloc, key=lambda r: r["tokens/s"])
        notes = [f"peak memory of a training step (fp32, AdamW state included; glibc): {alloc[0]['peak RSS MiB']:,.0f} MiB",
                 f"the original recipe's ~{ORIGINAL_TOKENS / 1e6:.1f}M tokens to a loss below 0.1 would take "
                 f"{ORIGINAL_TOKENS / ours / 3600:.1f} h at gpt_mini's {ours:,.0f} tokens/s above, "
                 f"{ORIGINAL_TOKENS / best['tokens/s'] / 3600:.1f} h under {best['allocator']}"]
        ours16 = next((r["tokens/s (median)"] for r in rows if r["trainer"] == "gpt_mini, bf16 autocast"), None)
        if ours16 and ours16 > ours:  # what `--dtype auto` trains with on such a CPU
            notes.append(f"in bf16 autocast, at gpt_mini's {ours16:,.0f} tokens/s above: {ORIGINAL_TOKENS / ours16 / 3600:.1f} h")
        md += B.report("gpt_mini's fp32 step under each memory allocator (a fresh process each, 2 interleaved rounds)",
                       alloc, notes)
    if not args.no_cpu_time:
        with B.threads(1):
            rows, _, _ = measure(cfg, data, batch, seq, rounds, n_steps, "cpu", None)
        out["train_cpu_time"] = rows
        md += B.report("The same, load-robust: 1 thread, CPU time", rows)
    out["markdown"] = md
    return out

if __name__ == "__main__":
    main()
