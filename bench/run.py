"""Run every benchmark and print one report (markdown tables with the machine described).

    python bench/run.py                    # everything this machine can measure (CPU: about 5 minutes on 2 quiet cores)
    python bench/run.py --quick            # tiny sizes, one round: checks that every script runs (no figures)
    python bench/run.py --only cpu_sample  # one of: cpu_sample, cpu_train, gpu_train
    python bench/run.py --out report.md    # also write the report to a file (e.g. to paste into bench/RESULTS.md)

The GPU benchmark reports "not measured" on a machine without CUDA (except in --quick, where it runs its code on the
CPU with a tiny model to prove that it works).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

SCRIPTS = ["cpu_sample", "cpu_train", "gpu_train"]

def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round (a smoke test, not figures)")
    p.add_argument("--only", choices=SCRIPTS, action="append", help="run only these (repeatable)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per comparison")
    p.add_argument("--no-cpu-time", action="store_true", help="skip the load-robust 1-thread CPU-time tables")
    p.add_argument("--recipe", action="store_true", help="gpu_train: also the original recipe end to end (GPU only)")
    p.add_argument("--out", default=None, help="write the markdown report here too")
    args = p.parse_args(argv)
    import importlib
    info = B.machine_info()
    head = (f"## Benchmark run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}{' (--quick: not figures)' if args.quick else ''}\n\n"
            f"Machine: {B.machine_line(info)}\n")
    print(head, flush=True)
    parts, t_all = [head], time.perf_counter()
    for name in args.only or SCRIPTS:
        sub = (["--quick"] if args.quick else []) + (["--rounds", str(args.rounds)] if args.rounds else [])
        if args.no_cpu_time and name != "gpu_train": sub.append("--no-cpu-time")
        if name == "gpu_train" and args.recipe: sub.append("--recipe")
        t0 = time.perf_counter()
        out = importlib.import_module(name).main(sub)
        parts.append(out["markdown"] + f"\n_{name}: {time.perf_counter() - t0:.0f} s_\n")
    parts.append(f"\n_total: {time.perf_counter() - t_all:.0f} s_\n")
    report = "\n".join(parts)
    if args.out: Path(args.out).write_text(report, encoding="utf-8")
    print(f"total {time.perf_counter() - t_all:.0f} s", flush=True)
    return report

if __name__ == "__main__":
    main()
