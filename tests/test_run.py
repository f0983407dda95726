"The run folder: atomic writes survive SIGKILL, a saved model loads back, and every folder that does not fit is refused by name."
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gpt_mini.model import GPT, GPTConfig
from gpt_mini.run import (CheckpointError, atomic_write, load_model, refuse_foreign_folder, remove_stale_temps, run_folder_kind,
                          run_lock, save_model)


def weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_atomic_write_survives_sigkill(tmp_path):
    path = tmp_path/"state.pt"
    atomic_write(path, lambda f: torch.save({"version": 0, "payload": torch.zeros(10)}, f))
    child = textwrap.dedent(f"""
        import io, sys, time, torch
        from gpt_mini.run import atomic_write
        def slow_write(f, version):
            buf = io.BytesIO(); torch.save({{"version": version, "payload": torch.full((4_000_000,), float(version))}}, buf)
            data = buf.getvalue()
            for i in range(0, len(data), 1 << 20):
                f.write(data[i:i + (1 << 20)]); f.flush()
                if i >= len(data) // 2: print("half", flush=True); time.sleep(5)  # killed here, mid-write
        for version in range(1, 100): atomic_write({str(path)!r}, lambda f: slow_write(f, version))
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "half"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == -signal.SIGKILL
    state = torch.load(path, weights_only=True)
    assert state["version"] == 0 and torch.equal(state["payload"], torch.zeros(10))
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert leftovers  # the dead writer's temp file, never the real name
    remove_stale_temps(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))


# ---- the run folder ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    save_model(model, tmp_path/"m", meta={"note": "x"})
    return model, tmp_path/"m"


def test_checkpoint_round_trip(saved):
    model, d = saved
    back = load_model(d)
    idx = torch.randint(0, 50257, (2, 10))
    with torch.no_grad(): assert torch.equal(back(idx), model(idx))
    assert weights_equal(back, model) and not back.training
    assert back.lm_head.weight is back.transformer.wte.weight
    assert json.loads((d/"config.json").read_text()) == model.config.to_dict()
    assert json.loads((d/"meta.json").read_text()) == {"note": "x"}
    from safetensors import safe_open
    with safe_open(d/"model.safetensors", "pt") as f:  # the tied matrix is stored once
        assert ("lm_head.weight" in f.keys()) != ("transformer.wte.weight" in f.keys())
    pt = torch.load(d/"model.pt", weights_only=True)
    assert set(pt) == set(model.state_dict())
    os.remove(d/"model.safetensors")  # model.pt alone (the recipe's export) loads too
    assert weights_equal(load_model(d), model)


def test_load_accepts_prefixed_and_wrapped_state_dicts(saved):
    model, d = saved
    os.remove(d/"model.safetensors")
    torch.save({"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()}}, d/"model.pt")
    assert weights_equal(load_model(d), model)


def test_config_mismatch_names_fields(saved):
    _, d = saved
    cfg = json.loads((d/"config.json").read_text())
    (d/"config.json").write_text(json.dumps({**cfg, "n_embd": 128, "n_layer": 3, "block_size": 32}))
    with pytest.raises(CheckpointError) as e: load_model(d)
    msg = str(e.value)
    for fragment in ["n_embd=64 in the weights but 128 in config.json", "n_layer=2 in the weights but 3",
                     "block_size=64 in the weights but 32", "model.safetensors"]:
        assert fragment in msg, msg


@pytest.mark.parametrize("content,fragment", [
    ('{"n_layer": 2, "n_head": 2}', r"missing field\(s\): n_embd, block_size"),
    ('{"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "flash": 1}', r"unknown field\(s\): flash"),
    ('{"n_layer": 0, "n_head": 2, "n_embd": 64, "block_size": 64}', "n_layer=0"),
    ('{"n_layer": 2, "n_he', "not valid JSON"),
    ('[1, 2]', "JSON object"),
])
def test_bad_config_json(saved, content, fragment):
    _, d = saved
    (d/"config.json").write_text(content)
    with pytest.raises(CheckpointError, match=fragment): load_model(d)


def test_missing_files(saved, tmp_path):
    _, d = saved
    with pytest.raises(CheckpointError, match="does not exist"): load_model(tmp_path/"nowhere")
    os.remove(d/"model.safetensors"); os.remove(d/"model.pt")
    with pytest.raises(CheckpointError, match="no weights"): load_model(d)
    os.remove(d/"config.json")
    with pytest.raises(CheckpointError, match="no config.json"): load_model(d)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
def test_truncated_or_corrupted_weights(saved, name):
    _, d = saved
    if name == "model.pt": os.remove(d/"model.safetensors")
    data = (d/name).read_bytes()
    (d/name).write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{name}.*corrupted or truncated"): load_model(d)
    (d/name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupted"): load_model(d)


def test_weights_of_another_shape(saved, tmp_path):
    _, d = saved
    torch.manual_seed(0)
    other = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64))
    save_model(other, tmp_path/"other")
    os.replace(tmp_path/"other"/"model.safetensors", d/"model.safetensors")
    with pytest.raises(CheckpointError, match="n_embd=32 in the weights but 64 in config.json"): load_model(d)


def test_model_pt_is_read_weights_only(saved):
    _, d = saved
    os.remove(d/"model.safetensors")

    class Evil:
        def __reduce__(self): return (os.system, ("echo pwned",))
    torch.save({"x": Evil()}, d/"model.pt")
    with pytest.raises(CheckpointError, match="model.pt could not be read"): load_model(d)


# ---- optimizer, precision -----------------------------------------------------------------------------------------------------


# ---- what a run folder is, and what is never written ------------------------------------------------------------------------

def test_folder_kinds(tmp_path):
    assert run_folder_kind(tmp_path/"missing") == "empty" and run_folder_kind(tmp_path) == "empty"
    (tmp_path/".lock").touch()
    assert run_folder_kind(tmp_path) == "empty"  # the lock alone is not content
    (tmp_path/"notes.md").write_text("mine")
    assert run_folder_kind(tmp_path) == "foreign"
    with pytest.raises(CheckpointError, match=r"holds files that gpt_mini did not write \(\.lock, notes\.md\)"):
        refuse_foreign_folder(tmp_path)
    with pytest.raises(CheckpointError, match="is a file"): refuse_foreign_folder(tmp_path/"notes.md")
    legacy = tmp_path/"legacy"; legacy.mkdir(); (legacy/"state.pt").write_bytes(b"x")
    assert run_folder_kind(legacy) == "run"  # what older versions wrote, without the mark
    save_model(GPT(GPTConfig.from_preset("tiny")), tmp_path/"saved")
    assert run_folder_kind(tmp_path/"saved") == "run"  # config.json with weights: a model folder, even unmarked
    assert not (tmp_path/"saved"/".gpt_mini_run").exists()  # only training marks (an exported Space carries no mark)


def test_stale_temps_only_ours(tmp_path):
    (tmp_path/".state.pt.4242.tmp").write_bytes(b"half")
    (tmp_path/".draft.tmp").write_text("a user's file")
    (tmp_path/"target.txt").write_text("keep")
    (tmp_path/".link.1.tmp").symlink_to(tmp_path/"target.txt")
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".draft.tmp", ".link.1.tmp", "target.txt"]


def test_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    (tmp_path/"precious.txt").write_text("keep")
    (tmp_path/"config.json").symlink_to(tmp_path/"precious.txt")
    atomic_write(tmp_path/"config.json", lambda f: f.write(b"{}"))
    assert (tmp_path/"precious.txt").read_text() == "keep"
    assert not (tmp_path/"config.json").is_symlink() and (tmp_path/"config.json").read_text() == "{}"


def test_lock_through_a_link_is_refused(tmp_path):
    (tmp_path/".lock").symlink_to(tmp_path/"nowhere")
    with pytest.raises(CheckpointError, match="symbolic link"):
        with run_lock(tmp_path, timeout=0): pass
    assert not (tmp_path/"nowhere").exists()


@pytest.mark.slow
def test_lock_is_reentrant_here_and_exclusive_across_processes(tmp_path):
    child = f"from gpt_mini.run import run_lock\nwith run_lock({str(tmp_path)!r}, timeout=0): pass"
    with run_lock(tmp_path, timeout=0):
        with run_lock(tmp_path, timeout=0): pass
        other = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
        assert other.returncode != 0 and "in use by another training process" in other.stderr
    assert subprocess.run([sys.executable, "-c", child]).returncode == 0  # released


# ---- weights that cannot be right ------------------------------------------------------------------------------------------

def _resave(d: Path, **tensors):
    from safetensors.torch import load_file, save_file
    state = load_file(d/"model.safetensors"); state.update(tensors); save_file(state, d/"model.safetensors")
    return state


def test_nan_and_integer_weights_are_refused_by_name(saved):
    _, d = saved
    from safetensors.torch import load_file
    bias = load_file(d/"model.safetensors")["transformer.h.1.attn.c_proj.bias"]
    _resave(d, **{"transformer.h.1.attn.c_proj.bias": torch.full_like(bias, float("inf"))})
    with pytest.raises(CheckpointError, match=r"transformer\.h\.1\.attn\.c_proj\.bias holds NaN or infinite"): load_model(d)
    _resave(d, **{"transformer.h.1.attn.c_proj.bias": bias.to(torch.int64)})
    with pytest.raises(CheckpointError, match="holds torch.int64 values, not floats"): load_model(d)
    os.remove(d/"model.safetensors")
    torch.save({"transformer.wte.weight": torch.ones(3, 4, dtype=torch.bool)}, d/"model.pt")
    with pytest.raises(CheckpointError, match="holds torch.bool values"): load_model(d)


@pytest.mark.parametrize("field,value", [("n_layer", 100_000), ("n_embd", 1_000_000 // 4 * 4), ("block_size", 10**9),
                                         ("vocab_size", 10**9)])
def test_a_config_far_larger_than_its_weights_is_refused_before_allocating(saved, field, value, monkeypatch):
    _, d = saved
    import gpt_mini.run as R
    def no_model(*args, **kwargs): raise AssertionError("a model was built from the config before it was checked")
    monkeypatch.setattr(R, "GPT", no_model)
    cfg = json.loads((d/"config.json").read_text())
    n_head = cfg["n_head"]
    (d/"config.json").write_text(json.dumps({**cfg, field: value, "n_head": n_head if field != "n_embd" else 4}))
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=f"{field}=\\d+ in the weights but {value} in config.json"): load_model(d)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing the size of the config


def test_a_run_folder_that_is_itself_a_link_is_fine(tmp_path):
    "Runs kept on another disk through a link (runs -> /mnt/big/runs) are the user's choice; links inside a run are not."
    from gpt_mini.run import open_log
    (tmp_path/"big").mkdir(); (tmp_path/"run").symlink_to(tmp_path/"big")
    with open_log(tmp_path/"run"/"metrics.jsonl") as f: f.write("{}\n")
    assert (tmp_path/"big"/"metrics.jsonl").read_text() == "{}\n"
