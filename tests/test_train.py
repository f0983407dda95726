"Training: the loop learns, is reproducible and resumable, saves atomically, stops on nan, and its run folder loads."
import errno
import json
import math
import random
import re
import tempfile
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt_mini.train as T
from gpt_mini.config import config_from_args
from gpt_mini.model import GPT, GPTConfig
from gpt_mini.run import format_log_line, history_from_metrics, perplexity, read_metrics, smooth
from gpt_mini.schedule import lr_after_step
from gpt_mini.train import CheckpointError, TrainConfig, TrainingDiverged, ensure_run, load_model, train, train_cli

ROOT = Path(__file__).resolve().parents[1]


def quick(tmp_path, name="run", **changes) -> TrainConfig:
    "A CI-sized run: the tiny model, a dozen steps of 4 × 16 tokens, no sample, no bar, no plot."
    base = dict(out=str(tmp_path/name), steps=12, warmup=2, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, log_every=0,
                sample_tokens=0, progress=False, live_plot=False, target_loss=None, ckpt_every=0, device="cpu")
    return TrainConfig.from_preset("tiny", **{**base, **changes})


def weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- learning ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_loss_falls_well_below_its_start(tmp_path):
    r = train(quick(tmp_path, steps=30, lr=3e-3, warmup=3, eval_every=10, sample_tokens=20))
    losses = r.history["loss"]
    assert abs(losses[0] - math.log(50257)) < 0.3
    assert smooth(losses)[-1] < losses[0] - 2.0, losses
    assert r.history["eval_val"][-1] < r.history["eval_val"][0] - 1.5
    assert r.stop_reason == "steps" and r.steps_done == 30
    files = {p.name for p in r.run_dir.iterdir()} | {"logs/" + p.name for p in (r.run_dir/"logs").iterdir()}
    assert {"config.json", "model.safetensors", "model.pt", "meta.json", "sample_output.txt", "loss.png", "state.pt",
            "logs/train.log"} <= files
    meta = json.loads((r.run_dir/"meta.json").read_text())
    assert meta["tokenizer"] == "tiktoken:gpt2" and meta["steps_done"] == 30 and meta["seed"] == 1337
    assert meta["data"]["sha256"] and meta["versions"]["torch"] == torch.__version__
    assert meta["best_train_loss"] == min(losses) and meta["final_val_loss"] == r.final_val_loss
    assert (r.run_dir/"sample_output.txt").read_text().strip()


@pytest.mark.slow
def test_baselines_and_the_whole_validation_split(tmp_path):
    "The run measures itself against the unigram/bigram counts of chapter 00, on the whole held-out text."
    from gpt_mini.data import load_dataset, baseline_losses
    r = train(quick(tmp_path, steps=6))
    d = load_dataset()
    meta = json.loads((r.run_dir/"meta.json").read_text())
    assert meta["baselines"] == pytest.approx(baseline_losses(d.train, d.val)) and set(meta["baselines"]) == {"unigram", "bigram"}
    # every consecutive 16-token window of the validation text, scored by the final model
    n = (len(d.val) - 1) // 16
    ids = torch.as_tensor(d.val[:n * 16 + 1].astype(np.int64))
    with torch.no_grad(): expect = r.model.eval()(ids[:-1].view(n, 16), ids[1:].view(n, 16))[1].item()
    assert r.val_loss_full == pytest.approx(expect, rel=1e-4) and meta["val_loss_full"] == r.val_loss_full
    log = (r.run_dir/"logs"/"train.log").read_text()
    assert re.search(r"# baselines on the validation text: unigram \d\.\d{4} \(ppl [\d,]+\), bigram \d\.\d{4}", log), log
    assert re.search(rf"# validation, whole split \({len(d.val):,} tokens\): loss {r.val_loss_full:.4f} \(ppl ", log)
    assert re.search(r"eval step 6 \| train \d+\.\d{4} \| val \d+\.\d{4} \(ppl [\d,.]+\)", log)
    assert perplexity(math.log(155.0)) == pytest.approx(155.0) and perplexity(1e4) == math.inf
    if sys.platform.startswith("linux"): assert "# malloc keeps freed memory for reuse" in log  # a CPU run keeps it


@pytest.mark.slow
def test_log_lines_have_the_recipe_format(tmp_path):
    r = train(quick(tmp_path, steps=7, log_every=3))
    lines = [l for l in (r.run_dir/"logs"/"train.log").read_text().splitlines() if l.startswith("step ")]
    assert [l.split(" | ")[0] for l in lines] == ["step 0/7", "step 3/7", "step 6/7"]
    lr_after_0 = T.lr_at(1, 3e-3, 2, 7, 3e-4)
    assert lines[0].startswith(f"step 0/7 | loss {r.history['loss'][0]:.4f} | lr {lr_after_0:.6e} | grad_norm ")
    assert format_log_line(50, 5000, 8.3372, lr_after_step(50)) == "step 50/5000 | loss 8.3372 | lr 3.120000e-05"


@pytest.mark.slow
def test_target_loss_stops_the_run(tmp_path):
    r = train(quick(tmp_path, target_loss=9.5, steps=40, lr=3e-3))
    assert r.stop_reason == "target" and r.steps_done < 40 and r.final_loss < 9.5
    assert json.loads((r.run_dir/"meta.json").read_text())["stop_reason"] == "target"


@pytest.mark.slow
def test_time_budget_stops_resumably(tmp_path):
    r = train(quick(tmp_path, steps=1000, max_seconds=0.5))
    assert r.stop_reason == "time" and 1 <= r.steps_done < 1000
    assert torch.load(r.run_dir/"state.pt", weights_only=True)["step"] == r.steps_done


# ---- reproducibility and resuming -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    a = train(quick(tmp_path, "a", dropout=0.1))
    b = train(quick(tmp_path, "b", dropout=0.1))
    c = train(quick(tmp_path, "c", dropout=0.1, seed=7))
    assert a.history["loss"] == b.history["loss"] and weights_equal(a.model, b.model)
    assert a.history["loss"] != c.history["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_resumed_equals_uninterrupted(tmp_path, mode):
    # dropout and gradient accumulation make the RNG state and the data position matter
    cfg = quick(tmp_path, "full", dropout=0.1, grad_accum=2, batch_mode=mode, eval_every=4, ckpt_every=3)
    full = train(cfg)
    paused = train(cfg, out=str(tmp_path/"resumed"), stop_at=5)
    assert paused.stop_reason == "paused" and paused.steps_done == 5
    resumed = train(cfg, out=str(tmp_path/"resumed"), resume=True)
    assert resumed.history["loss"] == full.history["loss"]
    evals = lambda h: dict(zip(h["eval_step"], h["eval_val"]))  # the paused run adds one evaluation, at step 5
    assert all(evals(resumed.history)[s] == v for s, v in evals(full.history).items())
    assert weights_equal(resumed.model, full.model)
    log = (tmp_path/"resumed"/"logs"/"train.log").read_text()
    assert "resumed at step 5" in log


@pytest.mark.slow
def test_resume_from_a_periodic_checkpoint_after_a_crash(tmp_path):
    cfg = quick(tmp_path, "full", ckpt_every=4)
    full = train(cfg)

    def crash_at_step_6(run):
        if run.step == 6: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=str(tmp_path/"crashed"), callback=crash_at_step_6)
    assert "interrupted at step 6" in (tmp_path/"crashed"/"logs"/"train.log").read_text()
    assert torch.load(tmp_path/"crashed"/"state.pt", weights_only=True)["step"] == 4
    resumed = train(cfg, out=str(tmp_path/"crashed"), resume=True)
    assert resumed.history["loss"] == full.history["loss"] and weights_equal(resumed.model, full.model)


@pytest.mark.slow
def test_resume_refuses_another_model(tmp_path):
    train(quick(tmp_path, stop_at=2))
    with pytest.raises(CheckpointError, match=r"n_layer=2 in the checkpoint but 4 now"):
        train(quick(tmp_path, model="small", resume=True))


@pytest.mark.slow
def test_resume_without_state_and_existing_run(tmp_path):
    with pytest.raises(CheckpointError, match="Nothing to resume"):
        train(quick(tmp_path, resume=True))
    train(quick(tmp_path, steps=2))
    with pytest.raises(CheckpointError, match="already holds a run.*--resume.*--overwrite"):
        train(quick(tmp_path, steps=2))
    train(quick(tmp_path, steps=2, overwrite=True))


@pytest.mark.slow
def test_a_locked_run_folder_is_refused(tmp_path):
    import fcntl
    out = tmp_path/"run"; out.mkdir()
    with open(out/".lock", "w") as f:  # another "process" holds the folder
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(CheckpointError, match="in use by another training process"):
            train(quick(tmp_path))
    train(quick(tmp_path))


# ---- divergence -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poison(run):
        if run.step == 7:
            with torch.no_grad(): run.raw_model.transformer.h[0].ln_1.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"diverged at step 7: the loss is nan.*state.pt \(step 6\)"):
        train(quick(tmp_path, ckpt_every=3), callback=poison)
    state = torch.load(tmp_path/"run"/"state.pt", weights_only=True)
    assert state["step"] == 6 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert "diverged at step 7" in (tmp_path/"run"/"logs"/"train.log").read_text()
    resumed = train(quick(tmp_path, ckpt_every=3), resume=True)  # the last good checkpoint resumes
    assert resumed.steps_done == 12 and all(map(math.isfinite, resumed.history["loss"]))


def test_inf_loss_stops_too(tmp_path):
    def blow_up(run):
        if run.step == 2:
            with torch.no_grad(): run.raw_model.lm_head.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="No checkpoint was saved"):
        train(quick(tmp_path), callback=blow_up)


# ---- atomic saves -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_failed_write_leaves_old_checkpoint(tmp_path, monkeypatch):
    cfg = quick(tmp_path, ckpt_every=3)
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **k):  # the second checkpoint dies half-way through writing: the disk is full
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04" + b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(T.torch, "save", failing_save)
    with pytest.raises(CheckpointError) as e:
        train(cfg)
    msg = str(e.value)
    assert "Saving the checkpoint of step 6 failed" in msg and "No space left on device" in msg
    assert "state.pt that was there is untouched" in msg and "step 3 with --resume" in msg
    monkeypatch.setattr(T.torch, "save", real_save)
    state = torch.load(tmp_path/"run"/"state.pt", weights_only=True)
    assert state["step"] == 3
    assert not list((tmp_path/"run").glob(".*.tmp"))  # the half-written temp file was removed
    assert train(cfg, resume=True).steps_done == 12


def test_cli_reports_a_full_disk(tmp_path, monkeypatch, capsys):
    def no_space(obj, f, *a, **k): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(T.torch, "save", no_space)
    argv = ["--preset", "tiny", "--steps", "3", "--warmup", "1", "--seq-len", "16", "--eval-every", "0", "--sample-tokens", "0",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path/"run")]
    assert train_cli(argv) == 1
    err = capsys.readouterr().err
    assert "gpt-mini train: error: Saving the checkpoint of step 3 failed" in err and "No space left on device" in err
    assert "This run has no earlier checkpoint" in err and "Traceback" not in err


@pytest.mark.slow
def test_read_only_output_folder_is_refused_up_front(tmp_path, monkeypatch):
    train(quick(tmp_path, stop_at=3, ckpt_every=3))  # a run that is worth keeping
    before = (tmp_path/"run"/"state.pt").read_bytes()
    real_open = open

    def read_only_open(file, mode="r", *a, **k):  # what a read-only mount (or a folder we may not write in) does
        if any(c in mode for c in "wax+") and Path(file).resolve().is_relative_to((tmp_path/"run").resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *a, **k)
    import gpt_mini.run
    monkeypatch.setattr(gpt_mini.run, "open", read_only_open, raising=False)
    with pytest.raises(CheckpointError, match=r"Cannot write in .*run \(Read-only file system\): choose a writable folder"):
        train(quick(tmp_path, resume=True))
    monkeypatch.undo()
    assert (tmp_path/"run"/"state.pt").read_bytes() == before


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"): return False
    probe = Path(tempfile.mkdtemp())
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True).returncode == 0
        if ok: subprocess.run(["umount", str(probe)], check=True)
        return ok
    except FileNotFoundError: return False
    finally: probe.rmdir()


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and permission to mount a tmpfs")
def test_a_real_full_disk_and_a_real_read_only_mount(tmp_path):
    "The same faults without any mocking: a 64 MB tmpfs fills up, then is remounted read-only."
    disk = tmp_path/"disk"; disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        # one state.pt of the tiny model (weights + two Adam moments) is ~40 MB: the second one cannot be written
        # next to the first
        cfg = quick(tmp_path, out=str(disk/"run"), ckpt_every=3)
        with pytest.raises(CheckpointError, match=r"step 6 failed.*No space left on device.*step 3 with --resume"):
            train(cfg)
        assert torch.load(disk/"run"/"state.pt", weights_only=True)["step"] == 3
        assert not list((disk/"run").glob(".*.tmp"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(CheckpointError, match=r"Cannot write in .*\(Read-only file system\)"):
            train(cfg, resume=True)
        assert torch.load(disk/"run"/"state.pt", weights_only=True)["step"] == 3
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---- Ctrl-C and SIGKILL, on real processes ---------------------------------------------------------------------------

CLI_RUN = ["--preset", "tiny", "--steps", "24", "--warmup", "2", "--batch-size", "4", "--seq-len", "16", "--dropout", "0.1",
           "--eval-every", "0", "--sample-tokens", "0", "--target-loss", "none", "--no-progress", "--device", "cpu"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the same float sums in every process


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gpt_mini.train", *CLI_RUN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)


def losses_of(run_dir: Path) -> list[float]:
    return torch.load(run_dir/"state.pt", weights_only=True)["history"]["loss"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[float]:
    out = tmp_path_factory.mktemp("uninterrupted")/"run"
    p = start_training(out)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return losses_of(out)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, uninterrupted):
    out = tmp_path/"run"
    p = start_training(out, "--log-every", "1", "--ckpt-every", "0")  # no periodic checkpoints: only Ctrl-C saves
    try:
        for line in p.stdout:
            if line.startswith("step 6/"): break  # step 6 is done
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err[-3000:]
    assert "interrupted at step" in err and "continue with --resume" in err and "Traceback" not in err
    state = torch.load(out/"state.pt", weights_only=True)
    assert 6 <= state["step"] < 24
    assert load_model(out) is not None  # the model of that step is exported too
    assert "SIGINT received: stopped after step" in (out/"logs"/"train.log").read_text()
    r = subprocess.run([sys.executable, "-m", "gpt_mini.train", *CLI_RUN, "--out", str(out), "--resume"],
                       capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses_of(out) == uninterrupted


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    def impatient(run):
        if run.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the first asks politely...
            os.kill(os.getpid(), signal.SIGINT)  # ...the second means now
    # Python's own handler, as in a terminal (pytest started as a shell's background job inherits SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(quick(tmp_path, ckpt_every=4), callback=impatient)
        handler_after = signal.getsignal(signal.SIGINT)
    finally: signal.signal(signal.SIGINT, outer)
    assert torch.load(tmp_path/"run"/"state.pt", weights_only=True)["step"] == 4
    assert "interrupted at step 5; resume from state.pt (step 4)" in (tmp_path/"run"/"logs"/"train.log").read_text()
    assert handler_after is signal.default_int_handler  # restored


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, uninterrupted):
    """Kill -9 a run that saves state.pt after every step (a save takes longer than a step here, so many kills land
    mid-save), at a random step plus a random delay; resume; again and again: the checkpoint always loads and the
    run ends with exactly the losses of one that was never killed."""
    out, rng, kills = tmp_path/"run", random.Random(0), []
    for attempt in range(20):
        resume = (out/"state.pt").exists()
        p = start_training(out, "--ckpt-every", "1", "--log-every", "1", *(["--resume"] if resume else []))
        try:
            if attempt < 6:
                kill_after = (torch.load(out/"state.pt", weights_only=True)["step"] if resume else 0) + rng.randint(1, 5)
                for line in p.stdout:
                    m = re.match(r"step (\d+)/", line)
                    if m and int(m.group(1)) >= kill_after: break
                if attempt % 2:  # at a random moment
                    time.sleep(rng.uniform(0, 0.15))
                else:  # surely while state.pt is being written
                    deadline = time.monotonic() + 30
                    while not list(out.glob(".state.pt.*.tmp")) and time.monotonic() < deadline: time.sleep(0.001)
                p.send_signal(signal.SIGKILL)
            _, err = p.communicate(timeout=300)
        finally:
            if p.poll() is None: p.kill()
        if p.returncode == 0: break
        assert p.returncode == -signal.SIGKILL, err[-3000:]
        state = torch.load(out/"state.pt", weights_only=True) if (out/"state.pt").exists() else None  # always loads
        kills.append((kill_after, state and state["step"], sorted(f.name for f in out.glob(".*.tmp"))))
    assert p.returncode == 0, err[-3000:]
    assert len(kills) >= 5, kills
    assert any(temps for *_, temps in kills), kills  # at least one kill landed in the middle of a save
    assert losses_of(out) == uninterrupted
    assert not list(out.glob(".*.tmp"))  # the next run cleans up what a killed save left


@pytest.mark.slow
def test_bf16_autocast_on_cpu_trains(tmp_path):
    r = train(quick(tmp_path, dtype="bf16", steps=8, lr=3e-3))
    assert all(map(math.isfinite, r.history["loss"])) and r.history["loss"][-1] < r.history["loss"][0]
    assert json.loads((r.run_dir/"meta.json").read_text())["precision"] == "bf16"
    assert load_model(r.run_dir).lm_head.weight.dtype == torch.float32  # weights stay fp32 under autocast


# ---- the command line ---------------------------------------------------------------------------------------------------------

def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as e: train_cli(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--preset", "--data", "--out", "--steps", "--batch-size", "--seq-len", "--lr", "--min-lr", "--warmup",
                 "--target-loss", "--resume", "--overwrite", "--device", "--dtype", "--compile", "--seed", "--grad-accum",
                 "--grad-clip", "--eval-every", "--log-every", "--ckpt-every", "--max-seconds", "--stop-at", "--model"]:
        assert flag in out, flag
    import re
    assert re.search(r"original: +model='gpt2' .*steps=5000", out)  # the presets, once, with what each changes
    assert "tuned:" not in out.split("presets (")[0]  # and no flag repeats every preset's value


@pytest.mark.parametrize("argv,fragment", [
    (["--steps", "ten"], "invalid int value: 'ten'"),
    (["--batch-mode", "shuffled"], "invalid choice: 'shuffled'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--seq-len", "4096"], "seq_len=4096 exceeds the context"),
    (["--warmup", "1900"], "warmup"),
    (["--lr", "-1"], "lr"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--target-loss", "low"], "expected a number or 'none'"),
    (["--resume", "--overwrite"], "contradict"),
    # every float flag refuses NaN and inf (NaN passes any `<` check), and the end-of-run sample is checked up front
    *[([flag, bad], f"{name}={bad} must be a finite number") for flag, name in [
        ("--lr", "lr"), ("--min-lr", "min_lr"), ("--weight-decay", "weight_decay"), ("--beta1", "beta1"),
        ("--beta2", "beta2"), ("--grad-clip", "grad_clip"), ("--dropout", "dropout"), ("--val-frac", "val_frac"),
        ("--target-loss", "target_loss"), ("--max-seconds", "max_seconds"), ("--sample-temperature", "sample_temperature")]
      for bad in ("nan", "inf")],
    (["--sample-prompt", ""], "sample_prompt is empty"),
    (["--sample-top-k", "0"], "sample_top_k=0 must be an integer ≥ 1"),
    (["--sample-temperature", "-1"], "sample_temperature=-1.0 must be ≥ 0"),
    (["--seed", str(2**64)], "seed=18446744073709551616 must be an integer in [0, 2**63)"),
    (["--seed", "-1"], "seed=-1 must be an integer"),
])
def test_bad_flags_get_clear_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as e: train_cli(argv)
    assert e.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_and_reports(tmp_path, capsys):
    out = tmp_path/"cli"
    base = ["--preset", "tiny", "--warmup", "1", "--seq-len", "16", "--batch-size", "2", "--sample-tokens", "5", "--out", str(out),
            "--no-progress", "--log-every", "2"]
    argv = base + ["--steps", "4"]
    assert train_cli(argv) == 0
    captured = capsys.readouterr().out
    assert "step 0/4 | loss" in captured and f"{out}: 4 steps" in captured
    # trained on 16-token windows: the saved model declares a 16-token context, and the log says so
    assert load_model(out).config == GPTConfig.from_preset("tiny", block_size=16)
    assert "saved model declares a context of 16" in (out/"logs"/"train.log").read_text()
    assert train_cli(argv) == 1 and "already holds a run" in capsys.readouterr().err
    assert train_cli(base + ["--resume", "--steps", "6"]) == 0
    assert torch.load(out/"state.pt", weights_only=True)["step"] == 6
    assert load_model(out).config.block_size == 16  # a resume keeps the whole table in state.pt and crops again on saving


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpt_mini.train", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--target-loss" in r.stdout
    r = subprocess.run([sys.executable, "-m", "gpt_mini.train", "--data", str(tmp_path/"missing.txt"), "--out",
                        str(tmp_path/"x"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "not found" in r.stderr


@pytest.mark.slow
def test_ensure_run(tmp_path):
    run = ensure_run(tmp_path/"r", preset="tiny", steps=3, warmup=1, seq_len=16, sample_tokens=0, progress=False, live_plot=False)
    assert load_model(run).config.n_layer == 2
    mtime = (run/"model.safetensors").stat().st_mtime
    assert ensure_run(run) == run and (run/"model.safetensors").stat().st_mtime == mtime  # not retrained


# ---- DDP ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_ddp_two_ranks_equal_grad_accum(tmp_path):
    common = ["--preset", "tiny", "--steps", "10", "--seq-len", "16", "--batch-mode", "sequential", "--eval-every", "0",
              "--sample-tokens", "0", "--target-loss", "none", "--no-progress", "--device", "cpu", "--log-every", "0",
              "--dtype", "fp32"]  # exact arithmetic: "auto" is bf16 on a CPU with AMX, whose rounding differs by ~2e-4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "gpt_mini.train", *common, "--batch-size", "2", "--out", str(tmp_path/"ddp")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    single = train(config_from_args([*common, "--batch-size", "2", "--grad-accum", "2", "--out", str(tmp_path/"one")]))
    ddp_state = torch.load(tmp_path/"ddp"/"state.pt", weights_only=True)
    assert ddp_state["step"] == 10
    np.testing.assert_allclose(ddp_state["history"]["loss"], single.history["loss"], rtol=0, atol=1e-5)
    single_state = torch.load(tmp_path/"one"/"state.pt", weights_only=True)  # both whole, before the saved copies' crop
    for k, v in single_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][k], v, rtol=0, atol=1e-5)
    meta = json.loads((tmp_path/"ddp"/"meta.json").read_text())
    assert meta["world_size"] == 2 and meta["tokens_seen"] == 10 * 2 * 16 * 2


# ---- never lose what was there ----------------------------------------------------------------------------------------------

def test_train_refuses_a_folder_of_someone_elses_files(tmp_path, capsys):
    project = tmp_path/"project"; project.mkdir()
    (project/"config.json").write_text('{"my": "settings"}'); (project/".draft.tmp").write_text("mine")
    before = {p.name: p.read_bytes() for p in project.iterdir()}
    for extra in ([], ["--overwrite"]):
        assert train_cli(["--preset", "tiny", "--steps", "6", "--out", str(project), "--no-progress", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "holds files that gpt_mini did not write" in err and str(project) in err
    assert {p.name: p.read_bytes() for p in project.iterdir()} == before  # not even a .lock was added


@pytest.mark.slow
def test_overwrite_keeps_the_old_run_resumable_when_the_new_start_fails(tmp_path, capsys):
    cfg = quick(tmp_path, ckpt_every=4)
    train(cfg, stop_at=8)
    state = (tmp_path/"run"/"state.pt").read_bytes()
    argv = ["--preset", "tiny", "--out", cfg.out, "--overwrite", "--data", str(tmp_path/"no-such.txt"), "--no-progress"]
    assert train_cli(argv) == 1 and "no-such.txt" in capsys.readouterr().err
    assert (tmp_path/"run"/"state.pt").read_bytes() == state
    assert train(cfg, resume=True).steps_done == cfg.steps  # still resumable


@pytest.mark.slow
def test_a_log_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys):
    cfg = quick(tmp_path)
    train(cfg, stop_at=4)
    victim = tmp_path/"victim.txt"; victim.write_text("keep me")
    log = tmp_path/"run"/"logs"/"train.log"; log.unlink(); log.symlink_to(victim)
    # resumed with its own settings (its train_config.json), so that the only thing wrong is the link
    assert train_cli(["--config", cfg.out, "--out", cfg.out, "--resume", "--no-progress", "--device", "cpu"]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "keep me"


# ---- the command line is the config ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_repeats_from_its_train_config(tmp_path):
    first = train(quick(tmp_path, steps=6))
    saved = json.loads((first.run_dir/"train_config.json").read_text())
    assert saved["steps"] == 6 and "resume" not in saved and "stop_at" not in saved
    again = config_from_args(["--config", str(first.run_dir), "--out", str(tmp_path/"again")])
    assert {**again.to_dict(), "out": None, "live_plot": None, "progress": None} == \
           {**quick(tmp_path, steps=6).to_dict(), "out": None, "live_plot": None, "progress": None}
    assert train(again).history["loss"] == first.history["loss"]  # the same run, step for step
    toml = tmp_path/"c.toml"; toml.write_text('preset = "tiny"\nsteps = 7\nlr = 2e-3\ntarget_loss = 0.5\n')
    c = config_from_args(["--config", str(toml), "--steps", "9"])
    assert (c.model, c.steps, c.lr, c.target_loss) == ("tiny", 9, 2e-3, 0.5)  # the file over the preset, flags over both


# ---- metrics for tools -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_metrics_jsonl_and_hooks_get_every_step_and_evaluation(tmp_path):
    seen = []
    r = train(quick(tmp_path, eval_every=4, eval_batches=1), on_metrics=seen.append)
    records = read_metrics(r.run_dir)
    assert records == seen
    assert [x["step"] for x in records if x["kind"] == "train"] == list(range(12))
    assert [x["step"] for x in records if x["kind"] == "eval"] == [0, 4, 8, 12]
    assert [x["kind"] for x in records][-1] == "final" and records[-1]["val_loss_full"] == r.val_loss_full
    assert all({"step", "elapsed"} <= set(x) for x in records)
    assert [x for x in records if x["kind"] == "train"][-1]["tokens_seen"] == 12 * 4 * 16
    h = history_from_metrics(records)
    assert h["loss"] == r.history["loss"] and h["eval_val"] == r.history["eval_val"]


@pytest.mark.slow
def test_metrics_after_a_crash_and_resume_hold_each_step_once(tmp_path):
    cfg = quick(tmp_path, ckpt_every=4)
    def crash_after_step_6(run):
        if run.step == 6: raise RuntimeError("power cut")
    with pytest.raises(RuntimeError): train(cfg, callback=crash_after_step_6)
    assert [x["step"] for x in read_metrics(cfg.out) if x["kind"] == "train"] == list(range(6))
    r = train(cfg, resume=True)  # resumes at the checkpoint of step 4: steps 4 and 5 run again
    assert [x["step"] for x in read_metrics(cfg.out) if x["kind"] == "train"] == list(range(12))
    assert [x["loss"] for x in read_metrics(cfg.out) if x["kind"] == "train"] == r.history["loss"]


@pytest.mark.slow
def test_tensorboard_hook_writes_scalars(tmp_path, monkeypatch):
    import types
    calls = []
    class FakeWriter:
        def __init__(self, log_dir): calls.append(("open", log_dir))
        def add_scalar(self, tag, value, step): calls.append((tag, step))
        def flush(self): pass
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    train(quick(tmp_path, eval_every=6, eval_batches=1, tensorboard=str(tmp_path/"tb")))
    assert calls[0] == ("open", str(tmp_path/"tb"))
    assert ("train/loss", 0) in calls and ("train/loss", 11) in calls and ("eval/val_loss", 6) in calls


@pytest.mark.slow
def test_wandb_hook_logs_every_record_with_the_run_config(tmp_path, monkeypatch):
    "W&B without an account: a stand-in `wandb` module records what the hook sends (init once, then log per record)."
    import types
    inits, logged = [], []
    class FakeRun:
        def log(self, values, step): logged.append((step, values))
    def init(project, **kwargs): inits.append((project, kwargs)); return FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    train(quick(tmp_path, eval_every=6, eval_batches=1, wandb="gpt-mini-test"))
    assert len(inits) == 1 and inits[0][0] == "gpt-mini-test" and inits[0][1]["config"]["steps"] == 12
    train_steps = [step for step, v in logged if "train/loss" in v]
    assert train_steps == list(range(12)) and all(isinstance(v["train/loss"], float) for _, v in logged if "train/loss" in v)
    assert any(step == 6 and "eval/val_loss" in v for step, v in logged)
    assert all(not any(isinstance(x, bool) or k.endswith("/step") for k, x in v.items()) for _, v in logged)


def test_wandb_without_its_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    argv = ["--preset", "tiny", "--steps", "6", "--out", str(tmp_path/"run"), "--no-progress", "--wandb", "proj"]
    assert train_cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--wandb" in err and "pip install wandb" in err and not (tmp_path/"run").exists()


def test_tensorboard_without_its_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    argv = ["--preset", "tiny", "--steps", "6", "--out", str(tmp_path/"run"), "--no-progress", "--tensorboard", str(tmp_path/"tb")]
    assert train_cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tensorboard" in err and "pip install tensorboard" in err
    assert not (tmp_path/"run").exists() and not (tmp_path/"tb").exists()  # said before anything was written


def test_a_start_that_fails_leaves_no_folder_behind(tmp_path, capsys):
    "Whatever stops a new run before its first step (text, --init, --seq-len) leaves --out as it was: absent."
    (tmp_path/"short.txt").write_text("To be.")
    cases = [(["--data", str(tmp_path/"short.txt")], "short.txt: The text has"),
             (["--init", str(tmp_path/"nowhere")], "--init"),
             (["--data", str(tmp_path/"missing.txt")], "not found")]
    for i, (extra, fragment) in enumerate(cases):
        out = tmp_path/f"run{i}"
        assert train_cli(["--preset", "tiny", "--out", str(out), "--no-progress", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err
        assert not out.exists(), sorted(p.name for p in out.iterdir())


# ---- fine-tuning: --init ----------------------------------------------------------------------------------------------------

def test_unreadable_data_is_one_line(tmp_path, capsys, monkeypatch):
    p = tmp_path/"locked.txt"; p.write_text("To be, or not to be: that is the question. " * 20)
    real = type(p).read_bytes
    monkeypatch.setattr(type(p), "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if self.name == "locked.txt" else real(self))  # EACCES: as root, chmod 000 would not stop a read
    assert train_cli(["--preset", "tiny", "--out", str(tmp_path/"run"), "--no-progress", "--data", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Cannot read" in err and "locked.txt" in err and "Permission denied" in err
    assert not (tmp_path/"run").exists()


@pytest.mark.slow
def test_init_from_a_run_and_from_a_transformers_folder(tmp_path):
    pytest.importorskip("transformers")
    base = train(quick(tmp_path, name="base", steps=30, warmup=3, eval_every=0))
    assert base.final_loss < 9.0
    fine = train(quick(tmp_path, name="fine", init=str(base.run_dir), model="small"))  # the architecture comes from init
    assert fine.history["loss"][0] < 9.5 and load_model(fine.run_dir).config == load_model(base.run_dir).config
    hf_dir = tmp_path/"hf"
    load_model(base.run_dir).to_hf().save_pretrained(hf_dir)
    via_hf = train(quick(tmp_path, name="via-hf", init=str(hf_dir)))
    assert abs(via_hf.history["loss"][0] - fine.history["loss"][0]) < 1e-4  # the same weights, the same first batch
    meta = json.loads((fine.run_dir/"meta.json").read_text())
    assert meta["init"] == str(base.run_dir) and meta["model_preset"] is None


@pytest.mark.slow
def test_init_gpt2_loads_openai_weights_through_the_hub_cache(tmp_path):
    # No network in tests: a small GPT-2 stands in for OpenAI's, laid out in a Hub cache exactly as a download leaves
    # it (models--gpt2/snapshots/<commit>, refs/main). `--init gpt2` must find it by name, offline, and train from it.
    transformers = pytest.importorskip("transformers")
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path/"hub"/"models--gpt2"/"snapshots"/commit
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_head=2, n_embd=32, n_positions=128))
    hf.save_pretrained(snapshot)
    (tmp_path/"hub"/"models--gpt2"/"refs").mkdir(); (tmp_path/"hub"/"models--gpt2"/"refs"/"main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path/"hub"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path/"fine"
    argv = ["--preset", "tiny", "--init", "gpt2", "--steps", "1", "--warmup", "1", "--lr", "1e-9", "--min-lr", "0",
            "--batch-size", "2", "--seq-len", "16", "--eval-every", "0", "--sample-tokens", "0", "--device", "cpu",
            "--out", str(out), "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "gpt_mini.cli", "train", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    model = load_model(out)
    assert (model.config.n_layer, model.config.n_embd, model.config.block_size) == (3, 32, 128)  # from the weights, not tiny
    ours = model.to_hf().state_dict()
    theirs = {k: v for k, v in hf.state_dict().items() if k in ours}
    assert len(theirs) == len(ours)
    assert max((ours[k] - v).abs().max().item() for k, v in theirs.items()) < 1e-6  # one step of lr 1e-9: intact
    assert json.loads((out/"meta.json").read_text())["init"] == "gpt2"


def test_init_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for init, fragment in [("gpt3", "neither one of gpt2"), ("gpt2", "gpt2")]:
        argv = ["--preset", "tiny", "--steps", "6", "--out", str(tmp_path/init), "--no-progress", "--init", init]
        assert train_cli(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("gpt-mini train: error: --init") and fragment in err and len(err.splitlines()) == 1
        assert not (tmp_path/init).exists()  # no empty run folder (not even a .lock) for a start that failed


@pytest.mark.parametrize("argv,fragment", [
    (["--device", "tpu"], "Unknown device 'tpu'"),
    (["--dtype", "fp16", "--device", "cpu"], "fp16 training needs a CUDA GPU"),
    *([(["--device", "cuda"], "no CUDA GPU")] if not torch.cuda.is_available() else []),
])
def test_a_device_or_dtype_this_machine_lacks_is_a_usage_error(tmp_path, capsys, argv, fragment):
    assert train_cli(["--preset", "tiny", "--out", str(tmp_path/"run"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and not (tmp_path/"run").exists()


def test_data_that_is_a_folder_or_a_device_is_named(tmp_path, capsys):
    for data, fragment in [(tmp_path, "is a folder, not a text file"), ("/dev/null", "is not a regular file")]:
        assert train_cli(["--preset", "tiny", "--out", str(tmp_path/"run"), "--no-progress", "--data", str(data)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err


@pytest.mark.parametrize("content", [{"step": 3}, [1, 2, 3]])
def test_resume_from_a_state_pt_that_is_no_checkpoint_is_one_line(tmp_path, capsys, content):
    (tmp_path/"run").mkdir(); torch.save(content, tmp_path/"run"/"state.pt")
    assert train_cli(["--preset", "tiny", "--out", str(tmp_path/"run"), "--resume", "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a gpt_mini training checkpoint" in err


@pytest.mark.slow
def test_training_into_a_linked_run_folder(tmp_path):
    (tmp_path/"big").mkdir(); (tmp_path/"runs").symlink_to(tmp_path/"big")
    r = train(quick(tmp_path, name="runs/x"))
    assert r.steps_done == 12 and (tmp_path/"big"/"x"/"metrics.jsonl").is_file()


# ------------------------------------------------------------------------------------- the 124M run kept in results/
def test_the_tuned_124m_run_is_kept_in_the_repository(tmp_path, monkeypatch):
    "results/gpt2-124m-tuned holds the small files of a real GPT-2 124M run of the tuned preset, read without a network."
    def offline(*args, **kwargs): raise AssertionError("result_file went online although this checkout has the file")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.chdir(tmp_path)  # found through the package's own checkout, not the working folder
    meta = json.loads(T.result_file("meta.json"))
    assert meta["params"] == 124_439_808 and meta["preset"] == "tuned" and meta["data"]["train_tokens"] == 304_223
    assert json.loads(T.result_file("config.json"))["n_layer"] == 12
    assert T.result_file("loss.png")[:8] == b"\x89PNG\r\n\x1a\n" and T.result_file("sample_output.txt").strip()
    # its train_config.json is one `--config` reads back (the code's promise; which preset it matches is data)
    kept = T.TrainConfig(**{k: v for k, v in json.loads(T.result_file("train_config.json")).items()}).validate()
    assert kept.model == "gpt2" and kept.tokens_per_step == meta["tokens_seen"] // meta["steps_done"]
    log = T.result_file("train.log").decode("utf-8").splitlines()
    steps = [l for l in log if l.startswith("step ")]
    assert steps[-1].startswith(f"step {meta['steps_done'] - 1}/")  # the last step is always logged
    losses = [float(l.split(" | ")[1].split()[1]) for l in steps]
    assert losses[0] > 10 and min(losses) < 3
    assert meta["best_val_loss"] < meta["baselines"]["bigram"]  # it learned more than pair counts before it memorized
    if meta["stop_reason"] == "target": assert losses[-1] < 0.099999 and meta["final_train_loss"] < 0.099999


def test_a_result_file_that_is_nowhere_is_one_line(tmp_path, monkeypatch):
    def offline(url, timeout=None): raise OSError("no network")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"results/gpt2-124m-tuned/nope\.txt: not in this checkout, and https://raw"):
        T.result_file("nope.txt")


@pytest.mark.slow
def test_context_is_cropped_to_the_trained_windows_only_from_scratch(tmp_path):
    """A run trained on windows shorter than its model's context saves a model that declares only the trained
    positions; its first positions compute what they did before the crop. A fine-tune keeps its --init's context."""
    kw = dict(steps=2, warmup=1, batch_size=2, eval_every=0, sample_tokens=4, progress=False, live_plot=False, device="cpu")
    short = train(TrainConfig.from_preset("tiny", out=str(tmp_path/"short"), seq_len=16, **kw))
    assert short.model.config.block_size == 16 and load_model(tmp_path/"short").config.block_size == 16
    assert short.model.transformer.wpe.weight.shape[0] == 16
    state = torch.load(tmp_path/"short"/"state.pt", weights_only=True)
    assert state["model"]["transformer.wpe.weight"].shape[0] == GPTConfig.from_preset("tiny").block_size  # resumable as trained
    full = GPT(GPTConfig.from_preset("tiny")); full.load_state_dict(state["model"]); full.eval()
    x = torch.randint(0, 50257, (1, 16))
    with torch.no_grad(): assert torch.equal(full(x), load_model(tmp_path/"short")(x))
    train(TrainConfig.from_preset("tiny", out=str(tmp_path/"whole"), seq_len=64, **kw))
    assert load_model(tmp_path/"whole").config.block_size == 64  # trained at the full context: nothing to crop
    train(TrainConfig.from_preset("tiny", out=str(tmp_path/"tuned"), init=str(tmp_path/"whole"), seq_len=16, **kw))
    assert load_model(tmp_path/"tuned").config.block_size == 64
    assert "keeps the 64 positions of --init" in (tmp_path/"tuned"/"logs"/"train.log").read_text()


@pytest.mark.slow
def test_resume_names_changed_settings_and_refuses_those_that_break_it(tmp_path, capsys):
    out = tmp_path/"r"
    base = ["--preset", "tiny", "--warmup", "1", "--seq-len", "16", "--batch-size", "2", "--sample-tokens", "0",
            "--eval-every", "0", "--no-progress", "--out", str(out), "--log-every", "0"]
    assert train_cli(base + ["--steps", "3"]) == 0
    capsys.readouterr()
    state_before = (out/"state.pt").stat().st_mtime_ns
    # a new batch size draws other batches: refused in one line, naming the flag and the way out; nothing written
    assert train_cli(base[:6] + ["--batch-size", "4"] + base[8:] + ["--steps", "5", "--resume"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--batch-size 2 → 4" in err and "--resume-anyway" in err
    assert (out/"state.pt").stat().st_mtime_ns == state_before
    # a longer run at a new rate: taken, and said on stderr and in the log
    assert train_cli(base + ["--steps", "5", "--lr", "1e-3", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "--steps 3 → 5" in err and "--lr 0.003 → 0.001" in err
    assert "# resumed with settings changed from train_config.json: --steps 3 → 5" in (out/"logs"/"train.log").read_text()
    # the user means it: resumed with the new batches
    assert train_cli(base[:6] + ["--batch-size", "4"] + base[8:] + ["--steps", "6", "--resume", "--resume-anyway"]) == 0
    assert "--batch-size 2 → 4" in capsys.readouterr().err
