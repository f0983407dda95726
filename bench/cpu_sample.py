"""CPU sampling: gpt_mini's `generate` against transformers' `GPT2LMHeadModel.generate`, same weights, same run.

    python bench/cpu_sample.py            # GPT-2 124M, fp32, 2 threads (about 2 minutes on 2 quiet cores)
    python bench/cpu_sample.py --quick    # a tiny model, one round: checks that it runs

What it measures, every case interleaved with the others round by round (see benchlib.py):

- decoding speed: an 8-token prompt, 100 new tokens, top-k 50, temperature 1 (tokens/s over the whole call, prompt
  included), for gpt_mini fp32, transformers fp32 (its KV cache on), gpt_mini fp32 with oneDNN-packed weights
  (`pack_for_cpu`: the same float32 math, another kernel library), gpt_mini on its own C kernel (`gemv_for_cpu`)
  with float32 and with bf16 weights (float32 arithmetic), gpt_mini int8 (`quantize_for_cpu`) and transformers after torch's own dynamic
  int8 quantization (what a transformers user would reach for);
- the memory-bandwidth ceiling: a batch-1 step must read every weight once, so tokens/s can never beat
  (read bandwidth) / (bytes of weights read per token); the bandwidth is measured in the same rounds;
- time to first token for a 200-token prompt (prefill plus one sampled token);
- quality of the bf16 and int8 paths against fp32 on held-out text (the last 10% of tiny Shakespeare): top-1 next-token
  agreement and the difference in cross-entropy, for the random-init 124M model and for a trained run if one exists;
- llama.cpp, the engine people run small models with on a laptop, when there is a build of it: set
  GPT_MINI_LLAMA_CPP to a llama.cpp source folder with build/bin/llama-bench in it (README.md says how to build one).
  The same weights go through gpt_mini's `export_hf` and llama.cpp's own converter to GGUF files in f32, f16 and
  q8_0; each is a case of the same interleaved rounds, timed by `llama-bench` (its `-pg 8,100` test: the 8-token
  prompt and 100 generated tokens, in one process per round, the model already mapped).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402  (sets the offline environment before torch/transformers load)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpt_mini.model import GPT, GPTConfig, generate  # noqa: E402

def weight_bytes_per_token(model) -> int:
    """Bytes of parameters a batch-1 decoding step reads: every weight once, except the embedding tables, of which it
    reads one row each, unless the token table is also the (tied, fp32) output head, which reads all of it.
    A quantized Linear counts its int8 weights plus a scale and a zero point per output channel; gpt_mini's GemvLinear its
    weight and bias buffers."""
    seen, total = set(), 0
    for mod in model.modules():
        if type(mod).__name__ == "GemvLinear":  # gpt_mini's kernel layer keeps its weights as buffers, not parameters
            total += sum(b.numel() * b.element_size() for b in mod.buffers(recurse=False))
            continue
        if callable(getattr(mod, "weight", None)):  # an int8 Linear (gpt_mini's Int8Linear, torch.ao's dynamic one)
            w, b = mod.weight(), mod.bias()       # hands out its int8 weight and fp32 bias through methods
            total += w.numel() * w.element_size() + w.size(0) * 8 + (b.numel() * b.element_size() if b is not None else 0)
            continue
        for p in mod.parameters(recurse=False):
            if id(p) in seen: continue
            seen.add(id(p))
            tied_head = isinstance(mod, torch.nn.Embedding) and any(
                p is getattr(m, "weight", None) for m in model.modules() if isinstance(m, torch.nn.Linear))
            if isinstance(mod, torch.nn.Embedding) and not tied_head: total += p.shape[1] * p.element_size()
            else: total += p.numel() * p.element_size()
    return total

def quantized(model):
    "gpt_mini's int8 CPU path, if the library has it (None otherwise)."
    import gpt_mini.cpu as M  # chapter 15's CPU paths
    q = getattr(M, "quantize_for_cpu", None)
    return q(model) if q is not None else None

def on_kernel(model, dtype=torch.bfloat16):
    "gpt_mini's CPU path on its own C kernel, if the library has it and it builds here (None otherwise, and why)."
    import gpt_mini.cpu as M
    to_kernel = getattr(M, "gemv_for_cpu", None)
    if to_kernel is None: return None, "gpt_mini.cpu has no gemv_for_cpu: its own kernel not measured"
    try: return to_kernel(model, dtype), None
    except RuntimeError as e: return None, f"gpt_mini's own kernel: not measured ({e})"

def packed(model):
    "gpt_mini's float32 CPU path with oneDNN-packed Linear weights, if the library has it (None otherwise)."
    import gpt_mini.cpu as M
    pack = getattr(M, "pack_for_cpu", None)
    return pack(model) if pack is not None and torch.backends.mkldnn.is_available() else None

def hf_dynamic_int8(hf):
    "A transformers user's int8: torch's dynamic quantization of every nn.Linear (GPT-2's Conv1D layers are not Linear)."
    import copy, warnings
    from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig
    from transformers.pytorch_utils import Conv1D
    hf = copy.deepcopy(hf)
    # Conv1D is a Linear with a transposed weight: swap each for an nn.Linear so that quantize_dynamic reaches it.
    for _name, mod in list(hf.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, Conv1D):
                lin = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                with torch.no_grad(): lin.weight.copy_(child.weight.t()); lin.bias.copy_(child.bias)
                setattr(mod, cname, lin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(hf, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8).eval()

def ours_sampler(model, prompt, n_new, top_k, clock="wall"):
    seed = [0]
    def run():
        seed[0] += 1
        t = B.timed(lambda: sum(1 for _ in generate(model, prompt, n_new, temperature=1.0, top_k=top_k, seed=seed[0])), clock)
        return n_new / t
    return run

def hf_sampler(hf, prompt, n_new, top_k, clock="wall"):
    ids = torch.tensor([prompt]); mask = torch.ones_like(ids)
    def go():
        with torch.inference_mode():
            hf.generate(ids, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=True,
                        top_k=top_k, top_p=None, temperature=1.0, pad_token_id=0, use_cache=True)
    return lambda: n_new / B.timed(go, clock)

def ours_ttft(model, prompt, top_k):
    return lambda: 1e3 * B.timed(lambda: next(iter(generate(model, prompt, 1, temperature=1.0, top_k=top_k, seed=0))))

def hf_ttft(hf, prompt, top_k):
    ids = torch.tensor([prompt]); mask = torch.ones_like(ids)
    def go():
        with torch.inference_mode():
            hf.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=True, top_k=top_k, top_p=None,
                        temperature=1.0, pad_token_id=0)
    return lambda: 1e3 * B.timed(go)

def llama_cpp_dir() -> Path | None:
    "A built llama.cpp source folder (GPT_MINI_LLAMA_CPP: llama-bench and the converter in it), or None."
    d = Path(os.environ.get("GPT_MINI_LLAMA_CPP") or "/nonexistent").expanduser()
    return d if (d/"build"/"bin"/"llama-bench").is_file() and (d/"convert_hf_to_gguf.py").is_file() else None

LLAMA_TYPES = {"f32": "llama.cpp f32", "f16": "llama.cpp f16", "q8_0": "llama.cpp q8_0"}
PEERS = {"gpt_mini fp32": "llama.cpp f32", "gpt_mini fp32 packed (oneDNN)": "llama.cpp f32",
         "gpt_mini fp32 (gpt_mini's kernel)": "llama.cpp f32",
         "gpt_mini bf16 weights": "llama.cpp f16", "gpt_mini int8": "llama.cpp q8_0"}

def llama_cpp_models(model, llama_dir: Path, work: Path) -> dict[str, Path]:
    "gpt_mini's weights as GGUF files (name → file), through `export_hf` and llama.cpp's own converter."
    from gpt_mini.hub import export_hf, gguf_from_export
    from gpt_mini.run import save_model
    export = export_hf(save_model(model, work/"run"), work/"hf")
    return {name: gguf_from_export(export, llama_dir, t) for t, name in LLAMA_TYPES.items()}

def llama_bench_seconds(gguf: Path, llama_dir: Path, threads: int, prompt_tokens: int, new_tokens: int) -> float:
    "Seconds of one llama-bench test: prompt + generation (`-pg`), or the prompt alone when `new_tokens` is 0."
    test = ["-p", "0", "-n", "0", "-pg", f"{prompt_tokens},{new_tokens}"] if new_tokens else ["-p", str(prompt_tokens), "-n", "0"]
    out = subprocess.run([str(llama_dir/"build"/"bin"/"llama-bench"), "-m", str(gguf), *test, "-t", str(threads),
                          "-r", "1", "-o", "json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["avg_ns"] / 1e9

def llama_sampler(gguf_and_dir, prompt, n_new, threads):
    gguf, llama_dir = gguf_and_dir
    return lambda: n_new / llama_bench_seconds(gguf, llama_dir, threads, len(prompt), n_new)

def cache_caveat(bytes_per: dict, bw_bytes: int) -> list[str]:
    """A note when "% of ceiling" is no bound on this machine: weights that fit (in part) in the last-level cache stay
    there between tokens, so a path can read them faster than a sum over DRAM does, and pass "100%"."""
    llc = B.last_level_cache_bytes()
    if not llc: return ["last-level cache size unknown: if it is large, \"% of ceiling\" may pass 100 (not a bound)"]
    cached = [n for n, b in bytes_per.items() if b < 4 * llc]
    if not cached and bw_bytes >= 4 * llc: return []
    return [f"caveat: this CPU's last-level cache is {llc >> 20} MiB, within 4× of the weight bytes per token of "
            f"{', '.join(cached) or 'no case'}; part of those weights stays cached between tokens, so \"% of ceiling\" "
            f"(DRAM bandwidth / bytes per token) is no bound for them and can pass 100%: compare their tokens/s with "
            f"each other (and with llama.cpp), not with the ceiling"]

def decode_rows(models: dict, prompt, n_new, top_k, rounds, clock, bandwidth: int | None, bytes_per: dict, threads: int = 2):
    "Interleaved decoding speed of every (name → (kind, model)) with, optionally, the read bandwidth in the same rounds."
    cases = {n: llama_sampler(m, prompt, n_new, threads) if kind == "llama" else
                (ours_sampler if kind == "ours" else hf_sampler)(m, prompt, n_new, top_k, clock)
             for n, (kind, m) in models.items() if clock == "wall" or kind != "llama"}
    if bandwidth: cases["read bandwidth"] = lambda: B.read_bandwidth_gbs(bandwidth)
    res = B.interleave(cases, rounds, warmup=1)
    B.free_bandwidth_buffer()
    bw = B.med(res.pop("read bandwidth")) if bandwidth else None
    theirs = res["transformers fp32"]
    rows = []
    for name, xs in res.items():
        row = {"sampler": name, "tokens/s (median)": B.med(xs), "range": B.spread(xs),
               "× transformers fp32": B.paired_ratio(xs, theirs)}
        if any(peer in res for peer in PEERS.values()):  # the peer of the same precision, in the same rounds
            row["× llama.cpp, same precision"] = B.paired_ratio(xs, res[PEERS[name]]) if name in PEERS else None
        if bw:
            ceiling = bw * 1e9 / bytes_per[name]
            row.update({"MB read/token": bytes_per[name] / 1e6, "ceiling tok/s": ceiling,
                        "% of ceiling": 100 * B.med(xs) / ceiling})
        rows.append(row)
    return rows, bw

@torch.inference_mode()
def agreement(ref, other, ids: torch.Tensor, n_windows: int, window: int) -> dict:
    """Top-1 next-token agreement and cross-entropy of `other` against `ref` on `n_windows` evenly spaced windows of
    held-out ids."""
    window = min(window, ref.config.block_size)
    starts = torch.linspace(0, len(ids) - window - 2, n_windows).long().tolist()
    x = torch.stack([ids[s:s + window] for s in starts]); y = torch.stack([ids[s + 1:s + window + 1] for s in starts])
    lr, lo = ref(x), other(x)
    V = lr.size(-1)
    loss_r = F.cross_entropy(lr.reshape(-1, V), y.reshape(-1)).item()
    loss_o = F.cross_entropy(lo.reshape(-1, V), y.reshape(-1)).item()
    agree = (lr.argmax(-1) == lo.argmax(-1)).float().mean().item()
    return dict(tokens=x.numel(), top1_agreement=agree, loss_fp32=loss_r, loss_rounded=loss_o, loss_diff=loss_o - loss_r)

def find_trained_run():
    "A small trained run folder, if the book has made one (nbs/runs/small or runs/small)."
    for d in (B.ROOT/"nbs"/"runs"/"small", B.ROOT/"runs"/"small"):
        if (d/"config.json").exists() and ((d/"model.safetensors").exists() or (d/"model.pt").exists()): return d
    return None

def main(argv=None) -> dict:
    p = B.base_parser(__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--run", default=None, help="a trained run folder for the quality figure (default: nbs/runs/small)")
    args = p.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    cfg = GPTConfig.from_preset("tiny" if quick else "gpt2")
    n_new, top_k = args.new_tokens or (5 if quick else 100), 50
    what = "tiny model (quick)" if quick else "GPT-2 124M"
    info = B.machine_info()
    B.log(f"cpu_sample: {what}, {rounds} rounds, {args.threads} threads")

    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = ours.to_hf().eval()
    ours_q = quantized(ours)
    ours_b, bf16_note = on_kernel(ours)
    ours_k = on_kernel(ours, torch.float32)[0]
    hf_q = hf_dynamic_int8(hf)
    prompt = list(range(1000, 1008))                    # 8 tokens
    long_prompt = [(1000 + 37 * i) % 50000 for i in range(min(200, cfg.block_size - 2))]
    models = {"gpt_mini fp32": ("ours", ours), "transformers fp32": ("hf", hf)}
    if (ours_packed := packed(ours)) is not None: models["gpt_mini fp32 packed (oneDNN)"] = ("ours", ours_packed)
    if ours_k is not None: models["gpt_mini fp32 (gpt_mini's kernel)"] = ("ours", ours_k)
    if ours_b is not None: models["gpt_mini bf16 weights"] = ("ours", ours_b)
    if ours_q is not None: models["gpt_mini int8"] = ("ours", ours_q)
    models["transformers int8 (torch dynamic)"] = ("hf", hf_q)
    fp32_bytes, int8_bytes = weight_bytes_per_token(ours), weight_bytes_per_token(ours_q if ours_q is not None else hf_q)
    bf16_bytes = weight_bytes_per_token(ours_b) if ours_b is not None else None
    bytes_per = {n: int8_bytes if "int8" in n else bf16_bytes if "bf16" in n else fp32_bytes for n in models}
    out = {"machine": info}
    llama_dir, llama_note = llama_cpp_dir(), None
    if llama_dir is not None:
        work = Path(tempfile.mkdtemp(prefix="gguf-"))
        for name, gguf in llama_cpp_models(ours, llama_dir, work).items():
            models[name] = ("llama", (gguf, llama_dir))
            bytes_per[name] = gguf.stat().st_size  # all of it is read per token: the token table is also the head
        version = subprocess.run([str(llama_dir/"build"/"bin"/"llama-bench"), "--version"], capture_output=True, text=True)
        said = (version.stdout + version.stderr).strip().splitlines()
        llama_note = (f"llama.cpp: {llama_dir} ({said[0] if said else 'version unknown'}); the same "
                      f"weights, through export_hf and its convert_hf_to_gguf.py; timed by llama-bench -pg "
                      f"{len(prompt)},{n_new} -t {args.threads} -r 1 (one process per round, which samples nothing: "
                      f"gpt_mini's cases also draw each token from the top {top_k}); its file size is its bytes per token")
    else: llama_note = "llama.cpp: not measured (set GPT_MINI_LLAMA_CPP to a built llama.cpp source folder)"

    # ---- decoding speed (headline: wall clock, 2 threads), with the bandwidth measured in the same rounds
    with B.threads(args.threads):
        bw_bytes = 16 * 2**20 if quick else 512 * 2**20
        rows, bw = decode_rows(models, prompt, n_new, top_k, rounds, "wall", bw_bytes, bytes_per, args.threads)
    out.update(read_bandwidth_gbs=bw, decode=rows)
    md = B.report(f"CPU sampling: {what}, {len(prompt)}-token prompt, {n_new} new tokens, top-k {top_k}, "
                  f"{args.threads} threads, wall clock, {rounds} interleaved rounds", rows,
                  [f"read bandwidth measured in the same rounds: {bw:.1f} GB/s (median, {args.threads} threads summing "
                   f"a {bw_bytes >> 20} MB fp32 tensor); ceiling = bandwidth / weight bytes read per token (the KV cache and activations "
                   f"are not counted, so the true ceiling is a little lower)",
                   "tokens/s = new tokens / time of the whole call (prompt included)", llama_note,
                   *([bf16_note] if bf16_note else []),
                   *cache_caveat(bytes_per, bw_bytes)])

    # ---- the same, load-robust: 1 thread, CPU time
    if not args.no_cpu_time:
        n_cpu = max(2, n_new // 2)
        with B.threads(1):
            rows, _ = decode_rows(models, prompt, n_cpu, top_k, rounds, "cpu", None, bytes_per, 1)
        out["decode_cpu_time"] = rows
        md += B.report(f"The same, load-robust: 1 thread, CPU time, {n_cpu} new tokens", rows,
                       ["llama.cpp runs in a process of its own, whose CPU time this table does not see: not in it"]
                       if llama_dir is not None else None)

    # ---- time to first token, 200-token prompt
    with B.threads(args.threads):
        cases = {n: (lambda g=m: 1e3 * llama_bench_seconds(g[0], g[1], args.threads, len(long_prompt), 0)) if kind == "llama"
                 else (ours_ttft if kind == "ours" else hf_ttft)(m, long_prompt, top_k) for n, (kind, m) in models.items()}
        res = B.interleave(cases, rounds, warmup=1)
    theirs = res["transformers fp32"]
    rows = [{"sampler": n, "time to first token ms (median)": B.med(xs), "range": B.spread(xs),
             "speed-up vs transformers fp32": B.paired_ratio(theirs, xs)} for n, xs in res.items()]
    out["ttft"] = rows
    md += B.report(f"Time to first token: {len(long_prompt)}-token prompt, {args.threads} threads, wall clock", rows,
                   [f"llama.cpp: llama-bench -p {len(long_prompt)} -n 0, the prompt alone (its first token's sampling is not in it)"]
                   if llama_dir is not None else None)

    # ---- quality of the rounded paths (bf16, int8) on held-out text
    rows = []
    rounded = {name: fn for name, fn in (("bf16", lambda m: on_kernel(m)[0]), ("int8", quantized))
               if (ours_b if name == "bf16" else ours_q) is not None}
    if rounded:
        from gpt_mini.data import load_dataset
        val = torch.as_tensor(load_dataset().val, dtype=torch.long)  # the last 10% of tiny Shakespeare
        n_win, win = (1, 32) if quick else (8, 256)
        for name in rounded:
            rows.append({"model": f"{what}, random init", "path": name,
                         **agreement(ours, ours_b if name == "bf16" else ours_q, val, n_win, win)})
        run_dir = Path(args.run) if args.run else (None if quick else find_trained_run())
        if run_dir is not None:
            from gpt_mini.run import load_model
            trained = load_model(run_dir).eval()
            c = trained.config
            for name, copy_of in rounded.items():
                rows.append({"model": f"trained run {run_dir.name} ({c.n_layer} layers, {c.n_embd} dim)", "path": name,
                             **agreement(trained, copy_of(trained), val, n_win, win)})
        notes = ["no pretrained GPT-2 weights are available offline here: the 124M figure is on random weights, "
                 "where almost every logit is a near-tie, so it says little"]
        notes.append("no trained run found (nbs/runs/small): random-init figures only" if run_dir is None
                     else f"trained run: {run_dir} (tiny Shakespeare's first 90%; these windows are from the last 10%)")
        md += B.report("bf16 and int8 vs fp32 on held-out text (last 10% of tiny Shakespeare)", rows, notes)
    else:
        md += B.report("bf16 and int8 vs fp32", [], ["gpt_mini.cpu has neither gemv_for_cpu nor quantize_for_cpu: not measured"])
    out["quality"] = rows
    out["markdown"] = md
    return out

if __name__ == "__main__":
    main()
