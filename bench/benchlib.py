"""What every benchmark here shares: the machine's description, interleaved timing, the machine's own ceilings
(memory read bandwidth, matmul rate) and a plain-text table.

The machines these run on are often shared and noisy, so no figure is ever a single timing: every comparison runs
its cases round-robin (ours, theirs, ours, theirs, ... with the starting case rotated each round), reports the median
of each case and, for ratios, the median of the per-round ratios (two timings taken seconds apart see the same load).

Each script reports two measures:
- the headline: wall-clock time with 2 torch threads (the Space's free hardware has 2 CPU cores), as a user sees it;
- a load-robust check: the process's CPU time with 1 thread. On a shared machine, wall time with 2 threads mostly
  measures how often one of the two threads waits for a core (every multi-threaded kernel ends in a barrier), which
  punishes code that launches more kernels; single-thread CPU time counts the work itself.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/"shared"

def setup_env():
    "Offline, quiet, and the corpus/tokenizer from ../shared when the caller has not said where they are."
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED/"tiktoken_cache"))
    if (SHARED/"data"/"tinyshakespeare.txt").exists():
        os.environ.setdefault("GPT_MINI_DATA", str(SHARED/"data"/"tinyshakespeare.txt"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")

setup_env()
import torch  # noqa: E402  (after the environment is set)

def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round: checks that the script runs (no figures)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per comparison (default: 3, quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the headline figures (default 2)")
    p.add_argument("--no-cpu-time", action="store_true",
                   help="skip the second, load-robust measurement (1 thread, CPU time)")
    return p

# ---------------------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"): return line.split(":", 1)[1].strip()
    except Exception: pass
    return platform.processor() or platform.machine()

def cpu_flags() -> str:
    "The instruction sets that decide which kernels are fast (AVX-512, VNNI, AMX, bf16)."
    try: flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    except Exception: return "?"
    keep = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    return " ".join(f for f in keep if f in flags) or "no AVX2"

def last_level_cache_bytes() -> int | None:
    "The largest CPU cache of cpu0 (the L3 on most machines), from sysfs; None where the kernel does not say."
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip(); unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * unit)
        except (OSError, ValueError): pass
    return max(sizes) if sizes else None

def machine_info() -> dict:
    info = dict(cpu=cpu_model(), cores=os.cpu_count(), cpu_flags=cpu_flags(), torch_threads=torch.get_num_threads(),
                python=platform.python_version(), torch=torch.__version__, platform=platform.platform(terse=True),
                last_level_cache_mb=round((last_level_cache_bytes() or 0) / 2**20) or None)
    try:
        import transformers; info["transformers"] = transformers.__version__
    except ImportError: info["transformers"] = "not installed"
    try:
        import gpt_mini; info["gpt_mini"] = gpt_mini.__version__
    except ImportError: pass
    try: info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError: pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info

def machine_line(info: dict | None = None) -> str:
    i = info or machine_info()
    cache = f", last-level cache {i['last_level_cache_mb']} MiB" if i.get("last_level_cache_mb") else ""
    s = (f"{i['cpu']} ({i['cpu_flags']}){cache}, {i['cores']} cores, torch {i['torch']} ({i['torch_threads']} threads), "
         f"transformers {i['transformers']}, Python {i['python']}")
    if "gpu" in i: s += f", GPU {i['gpu']} (CUDA {i['cuda']})"
    if "load_avg_1m" in i: s += f"; load average at start {i['load_avg_1m']}"
    return s

# ---------------------------------------------------------------------------------------------------------- timing
def interleave(cases: dict, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each case (a function returning a measurement) `rounds` times, round-robin, rotating who goes first.

    Returns {name: [measurement per round]}. A `warmup` round runs first and is thrown away (first calls allocate,
    fill caches, pick kernels)."""
    names = list(cases)
    for _ in range(warmup):
        for n in names: cases[n]()
    out = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order: out[n].append(cases[n]())
    return out

def med(xs) -> float: return statistics.median(xs)

def paired_ratio(a: list[float], b: list[float]) -> float:
    "Median over rounds of a[i] / b[i]: each ratio compares two measurements taken moments apart."
    return statistics.median(x / y for x, y in zip(a, b))

def spread(xs) -> str:
    "min-max as a short string, to show how noisy a figure was."
    return f"{_fmt(float(min(xs)))}-{_fmt(float(max(xs)))}"

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

def timed(fn, clock: str = "wall") -> float:
    """Seconds `fn()` takes: wall-clock time, or with clock='cpu' the CPU time this process used (all its threads).

    With one thread, CPU time leaves out the time the process spent waiting for a core that another process held:
    on a shared machine it is the steadier measure of the work done (memory contention still shows)."""
    c = CLOCKS[clock]; t0 = c(); fn(); return c() - t0

class threads:
    "Context manager: run torch with `n` threads, then restore the previous count."
    def __init__(self, n: int): self.n = n
    def __enter__(self): self.old = torch.get_num_threads(); torch.set_num_threads(self.n); return self
    def __exit__(self, *a): torch.set_num_threads(self.old)

# ---------------------------------------------------------------------------------------------------------- ceilings
def read_bandwidth_gbs(nbytes: int = 512 * 2**20) -> float:
    """One measurement of memory read bandwidth (GB/s): summing an fp32 tensor far larger than the caches reads every
    byte once and does almost no arithmetic, like a batch-1 decoding step reading the weights."""
    x = getattr(read_bandwidth_gbs, "_buf", None)
    if x is None or x.numel() * 4 != nbytes:
        x = torch.ones(nbytes // 4); read_bandwidth_gbs._buf = x
    t = timed(lambda: x.sum())
    return nbytes / t / 1e9

def free_bandwidth_buffer(): read_bandwidth_gbs._buf = None

def matmul_gflops(n: int = 1024, dtype=torch.float32, device="cpu", reps: int = 3) -> float:
    "One measurement of a square matmul's rate in GFLOP/s (2·n³ FLOPs per product)."
    a = torch.randn(n, n, device=device, dtype=dtype); b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    a @ b; sync()
    t0 = time.perf_counter()
    for _ in range(reps): a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9

# ---------------------------------------------------------------------------------------------------------- output
def table(rows: list[dict], columns: list[str] | None = None) -> str:
    "A GitHub-flavoured markdown table (readable as plain text too)."
    if not rows: return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])

def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v: return "n/a"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)

def report(title: str, rows: list[dict], notes: list[str] = (), columns=None) -> str:
    s = f"### {title}\n\n{table(rows, columns)}\n"
    if notes: s += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(s, flush=True)
    return s + "\n"

def log(*a):
    print(*a, file=sys.stderr, flush=True)
