"""CPU training: gpt_mini against transformers' GPT2LMHeadModel, same weights, same batches, same optimizer, same run.

    python bench/cpu_train.py           # the 'small' config, batch 8 × 256, fp32, 2 threads (about 3 minutes)
    python bench/cpu_train.py --quick   # a tiny model, one round: checks that it runs

One training step = forward with the loss, backward, gradient clipping to norm 1, AdamW step, zero the gradients.
Each measurement times `--steps` steps; gpt_mini and transformers alternate round by round with a square fp32 matmul
(the machine's own rate, the fair 100% for GFLOP/s on this CPU) measured in the same rounds.

FLOPs per token: 6·N + 12·n_layer·T·C, with N the parameters that take part in matrix multiplies (the blocks'
Linear weights and the output head; embeddings are lookups) and the second term the attention scores and weighted
sums, counted in full as is customary (causal masking would halve it).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

import torch  # noqa: E402

from gpt_mini.model import GPT, GPTConfig  # noqa: E402

def matmul_params(cfg: GPTConfig) -> int:
    "Parameters that are multiplied (not looked up) per token: 12·C² per block (q,k,v, proj, MLP) and the head."
    return cfg.n_layer * 12 * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd

def train_flops_per_token(cfg: GPTConfig, seq_len: int) -> float:
    return 6 * matmul_params(cfg) + 12 * cfg.n_layer * seq_len * cfg.n_embd

def make_optimizer(params, lr=6e-4):
    "The same AdamW for both sides (decoupled weight decay 0.1 on everything: the speed does not depend on the groups)."
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)

def batches(cfg, batch, seq, n, quick):
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

def ours_step(model, opt):
    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    return step

def hf_step(hf, opt):
    def step(x, y):
        # a transformers user passes labels = input ids and lets the model shift them by one
        loss = hf(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    return step

def timer(step, data, n_steps, tokens_per_step):
    i = [0]
    def run():
        def go():
            for _ in range(n_steps):
                x, y = data[i[0] % len(data)]; i[0] += 1
                step(x, y)
        return n_steps * tokens_per_step / B.timed(go)
    return run

def main(argv=None) -> dict:
    p = B.base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per measurement (default 3, quick 1)")
    p.add_argument("--batch", type=int, default=None); p.add_argument("--seq", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or 2)
    quick = args.quick
    rounds, n_steps = args.rounds or (1 if quick else 5), args.steps or (1 if quick else 3)
    cfg = GPTConfig.from_preset("tiny" if quick else "small")
    batch, seq = args.batch or (2 if quick else 8), args.seq or (32 if quick else 256)
    info = B.machine_info()
    B.log(f"cpu_train: {'tiny' if quick else 'small'} config, batch {batch} × {seq}, {rounds} rounds of {n_steps} steps")

    torch.manual_seed(0)
    ours = GPT(cfg).train()
    hf = ours.to_hf().train()
    data = batches(cfg, batch, seq, 8, quick)
    mm_n = 256 if quick else 1024
    cases = {"gpt_mini": timer(ours_step(ours, make_optimizer(ours.parameters())), data, n_steps, batch * seq),
             "transformers": timer(hf_step(hf, make_optimizer(hf.parameters())), data, n_steps, batch * seq),
             "fp32 matmul GFLOP/s": lambda: B.matmul_gflops(mm_n)}
    res = B.interleave(cases, rounds, warmup=1)
    peak = B.med(res.pop("fp32 matmul GFLOP/s"))
    fpt = train_flops_per_token(cfg, seq)
    theirs = res["transformers"]
    rows = [{"trainer": n, "tokens/s (median)": B.med(xs), "range": B.spread(xs),
             "× transformers": B.paired_ratio(xs, theirs), "GFLOP/s": B.med(xs) * fpt / 1e9,
             "% of matmul rate": 100 * B.med(xs) * fpt / 1e9 / peak} for n, xs in res.items()]
    md = B.report(f"CPU training: {'tiny' if quick else 'small'} config ({cfg.n_layer} layers, {cfg.n_head} heads, "
                  f"{cfg.n_embd} dim, vocab {cfg.vocab_size}), batch {batch} × {seq}, fp32, AdamW + clipping, "
                  f"{info['torch_threads']} threads, {rounds} interleaved rounds of {n_steps} steps", rows,
                  [f"{fpt / 1e6:.1f} MFLOP per token (6·N + 12·L·T·C, N = {matmul_params(cfg) / 1e6:.1f}M multiplied "
                   f"parameters); fp32 matmul rate measured in the same rounds: {peak:.0f} GFLOP/s ({mm_n}² matmul)"])
    return {"machine": info, "matmul_gflops": peak, "flops_per_token": fpt, "train": rows, "markdown": md}

if __name__ == "__main__":
    main()
