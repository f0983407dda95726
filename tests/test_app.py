"""The Gradio sampler through its API (gradio_client), its command line, and an exported Space, with a tiny model."""
import json, os, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

gr = pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'gpt_mini[app]')")
from gradio_client import Client
from gradio_client.exceptions import AppError

from gpt_mini.space import export_space, export_space_cli
from gpt_mini.app import (SamplerInputError, app_cli, build_demo, check_request, check_server,
                          free_port, launch, sample_stream)
from gpt_mini.model import GPT, GPTConfig
from gpt_mini.run import CheckpointError, save_model

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    "A run folder holding a freshly initialised tiny model."
    import torch
    torch.manual_seed(0)
    return save_model(GPT(GPTConfig.from_preset("tiny")), tmp_path_factory.mktemp("runs")/"tiny")

@pytest.fixture(scope="module")
def subprocess_servers(run_dir, tmp_path_factory):
    """`python -m gpt_mini.app` and an exported Space's `python app.py`, each a server in its own process: {name: (proc,
    url, folder)}. Started before the in-process tests so that their slow start (importing torch and Gradio) overlaps."""
    space = export_space(run_dir, tmp_path_factory.mktemp("export")/"space", title="Tiny test Space")
    ports = free_port(), free_port()
    procs = {"cli": (serve_subprocess([sys.executable, "-m", "gpt_mini.app", "--ckpt", str(run_dir), "--port", str(ports[0])],
                                      ROOT, ports[0]), f"http://127.0.0.1:{ports[0]}/", run_dir),
             # the exported app.py, run as a Space runs it: `python app.py`, the port from the environment
             "space": (serve_subprocess([sys.executable, "app.py"], space, ports[1]), f"http://127.0.0.1:{ports[1]}/", space)}
    yield procs
    for proc, _, _ in procs.values(): stop(proc)

@pytest.fixture(scope="module")
def server(run_dir, subprocess_servers):
    "One sampler for the whole module, served from the run folder: (url, client, demo)."
    demo = build_demo(run_dir, device="cpu")
    url = launch(demo, port=free_port(), quiet=True)
    client = Client(url, verbose=False, download_files=False)
    yield url, client, demo
    demo.close()

def ask(client, prompt="Hi", max_new_tokens=6, temperature=0.8, top_k=50, top_p=1.0, seed=0):
    return client.predict(prompt, max_new_tokens, temperature, top_k, top_p, seed, api_name="/generate")

def wait_for_server(proc, url, timeout=90):
    "Wait until a sampler started as a subprocess answers; fail with its output if it dies or never does."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f"the server exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try: return check_server(url, "Hi", max_new_tokens=4, timeout=10)
        except Exception: time.sleep(0.5)
    proc.kill(); pytest.fail(f"the server did not answer within {timeout}s:\n{proc.stdout.read()[-3000:]}")

def serve_subprocess(args, cwd, port):
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def stop(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()

# ---------------------------------------------------------------- through the API

@pytest.mark.slow
def test_streaming_yields_growing_text(server):
    _, client, _ = server
    job = client.submit("To be, or not to be", 24, 1.0, 50, 1.0, 1, api_name="/generate")
    text, facts = job.result(timeout=60)
    texts = [o[0] for o in job.outputs()]
    assert len([t for t in texts if t]) >= 2, texts  # several updates, not one final answer
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), texts
    assert texts[-1] == text and text
    assert "tokens/s" in facts and "24 tokens" in facts and "seed 1" in facts and "parameters" in facts

def test_same_seed_same_text(server):
    _, client, _ = server
    a, b, c = (ask(client, "ROMEO:", 12, seed=s)[0] for s in (42, 42, 43))
    assert a == b and a != c

def test_random_seed_is_reported(server):
    _, client, _ = server
    text, facts = ask(client, seed=-1)
    seed = int(facts.split("seed ")[1].split()[0])
    assert ask(client, seed=seed)[0] == text  # the reported seed reproduces the text

@pytest.mark.parametrize("args, message", [
    (dict(prompt=""), "The prompt is empty"),
    (dict(prompt="  \n\t "), "The prompt is empty"),
    (dict(max_new_tokens=0), "Max new tokens must be between 1 and 1024"),
    (dict(max_new_tokens=100_000), "Max new tokens must be between 1 and 1024"),
    (dict(temperature=-1), "Temperature must be between 0 and 2"),
    (dict(temperature=3.5), "Temperature must be between 0 and 2"),
    (dict(top_k=-5), "Top-k must be at least 0"),
    (dict(top_p=0), "Top-p must be greater than 0"),
    (dict(top_p=1.01), "Top-p must be between 0 and 1"),
    (dict(seed=-7), "Seed must be between -1 and 4294967295"),
    (dict(max_new_tokens=None), "Max new tokens is missing"),
])
def test_bad_input_gets_the_apps_message(server, args, message):
    _, client, _ = server
    with pytest.raises(AppError, match=message): ask(client, **args)

def test_server_keeps_serving_after_errors(server):
    _, client, _ = server
    for bad in ("", " "):
        with pytest.raises(AppError): ask(client, bad)
    text, facts = ask(client, "Still there?")
    assert len(text) > 0 and "**Last generation** 6 tokens" in facts  # a continuation of the 6 tokens asked for

def test_long_prompt_is_cropped_from_the_left(server):
    _, client, _ = server
    text, facts = ask(client, "All the world's a stage. " * 800, 5)  # 20,000 characters, far beyond a context of 64
    assert len(text) > 0 and "**Last generation** 5 tokens" in facts and "cropped" in facts and "the last 64" in facts

def test_unicode_and_emoji(server):
    _, client, _ = server
    text, facts = ask(client, "naïve café — 日本語の文章 🙂🎭 ", 16, seed=3)
    assert isinstance(text, str) and text and "tokens/s" in facts

def test_temperature_zero_is_greedy(server):
    _, client, _ = server
    (a, facts), (b, _) = ask(client, "Hi", 10, temperature=0, seed=1), ask(client, "Hi", 10, temperature=0, seed=2)
    assert a == b and "greedy" in facts

def test_top_k_larger_than_the_vocabulary(server):
    _, client, _ = server
    text, facts = ask(client, "Hi", 6, top_k=1_000_000, seed=5)
    assert text == ask(client, "Hi", 6, top_k=0, seed=5)[0]  # the same as no top-k at all
    assert "more than the vocabulary" in facts

def test_twenty_simultaneous_requests_all_complete(server):
    url, _, _ = server
    clients = [Client(url, verbose=False, download_files=False) for _ in range(4)]
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(ask, clients[i % 4], f"User {i}:", 4, 1.0, 50, 1.0, i) for i in range(20)]
        results = [f.result(timeout=120) for f in futures]
    assert len(results) == 20 and all(text and "tokens/s" in facts for text, facts in results)

def test_stop_ends_the_generation(server):
    _, client, _ = server
    def workers(): return [t for t in threading.enumerate() if t.name == "gpt_mini-sampler"]
    job = client.submit("A long story:", 1024, 1.0, 50, 1.0, 0, api_name="/generate")
    t0 = time.monotonic()
    while not any(o[0] for o in job.outputs()) and time.monotonic() - t0 < 30: time.sleep(0.05)
    assert workers(), "no generation is running"
    job.cancel()
    t0 = time.monotonic()
    while workers() and time.monotonic() - t0 < 15: time.sleep(0.1)
    assert not workers(), "the generation went on after Stop"

# ---------------------------------------------------------------- the plain functions behind the page

def test_check_request_without_a_server():
    cfg = GPTConfig.from_preset("tiny")
    r = check_request(cfg, "Hi", 5, 0.5, 10, 0.9, 7)
    assert (r.max_new_tokens, r.temperature, r.top_k, r.top_p, r.seed, r.notes) == (5, 0.5, 10, 0.9, 7, [])
    with pytest.raises(SamplerInputError, match="must be a number"): check_request(cfg, "Hi", temperature="warm")
    with pytest.raises(SamplerInputError, match="whole number"): check_request(cfg, "Hi", max_new_tokens=2.5)

def test_sample_stream_with_a_model_in_memory():
    model = GPT(GPTConfig.from_preset("tiny"))
    steps = list(sample_stream(model, "Hi", max_new_tokens=5, seed=0))
    assert steps[-1][0] and "5 tokens" in steps[-1][1]

# ---------------------------------------------------------------- bad checkpoints, at start-up

def test_missing_files_are_named(tmp_path, run_dir, capsys):
    with pytest.raises(CheckpointError, match="config.json"): build_demo(tmp_path)
    weightless = tmp_path/"weightless"; weightless.mkdir()
    (weightless/"config.json").write_text((run_dir/"config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights"): build_demo(weightless)
    assert app_cli(["--ckpt", str(weightless)]) == 1  # the run's problem, not the command line's: 1
    assert "no weights" in capsys.readouterr().err
    assert app_cli(["--ckpt", str(tmp_path/"nowhere")]) == 1
    assert "no run folder" in capsys.readouterr().err

def test_config_and_weights_that_disagree_are_named(tmp_path, run_dir, capsys):
    bad = tmp_path/"bad"
    save_model(GPT(GPTConfig.from_preset("tiny")), bad)
    cfg = json.loads((bad/"config.json").read_text())
    (bad/"config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="n_layer"): build_demo(bad)
    assert app_cli(["--ckpt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "n_layer" in err and "Traceback" not in err
    assert export_space_cli(["--ckpt", str(bad), "--out", str(tmp_path/"space")]) == 1
    assert "n_layer" in capsys.readouterr().err

# ---------------------------------------------------------------- the command line and the Space, as subprocesses

def test_python_m_gpt_mini_app_serves(subprocess_servers):
    proc, url, _ = subprocess_servers["cli"]
    assert wait_for_server(proc, url)

def test_exported_space_starts_and_answers(subprocess_servers, run_dir):
    proc, url, space = subprocess_servers["space"]
    names = {p.name for p in space.iterdir()}
    assert {"app.py", "requirements.txt", "README.md", "config.json", "model.safetensors"} <= names
    front = (space/"README.md").read_text(encoding="utf-8").split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front and f"sdk_version: {gr.__version__}" in front
    reqs = (space/"requirements.txt").read_text().splitlines()
    assert any(r.startswith("torch") for r in reqs) and f"gradio=={gr.__version__}" in reqs
    assert any(r.startswith("gpt_mini[app] @ git+https://github.com/") for r in reqs)
    assert json.loads((space/"config.json").read_text()) == json.loads((run_dir/"config.json").read_text())
    assert wait_for_server(proc, url)


def test_a_run_folder_on_a_cpu_is_served_on_the_fast_cpu_path(run_dir):
    from gpt_mini.app import load_sampler_model, model_facts
    from gpt_mini.model import generate
    from gpt_mini.run import load_model
    plain = load_model(run_dir)
    exact, _, why = load_sampler_model(run_dir, device="cpu", precision="fp32")
    assert "float32" in model_facts(exact) and why == "float32 as trained (asked for)"
    assert list(generate(exact, [1, 2, 3], 40, temperature=0)) == list(generate(plain, [1, 2, 3], 40, temperature=0))
    int8, _, why = load_sampler_model(run_dir, device="cpu", precision="int8")
    facts = model_facts(int8)
    assert "int8 weights" in facts and f"{sum(p.numel() for p in plain.parameters()) / 1e6:.1f}M parameters" in facts
    assert len(list(generate(int8, [1, 2, 3], 5, seed=0))) == 5 and why == "int8 (asked for)"
    auto, origin, why = load_sampler_model(run_dir, device="cpu")  # a trained run: int8 keeps its distributions
    assert "int8 weights" in model_facts(auto) and why.startswith("int8, ") and "nats from float32" in why
    memory = GPT(GPTConfig.from_preset("tiny"))
    assert load_sampler_model(memory)[0] is memory  # a model in memory is served as it is
    assert "float32" == model_facts(memory).rsplit(", ", 1)[1].split(" ·")[0]
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, int8"):
        load_sampler_model(memory, precision="fp16")
    half, _, why = load_sampler_model(run_dir, device="cpu", precision="bf16")
    assert "bf16 weights" in model_facts(half) and why == "bf16 weights (asked for)"
    assert len(list(generate(half, [1, 2, 3], 5, seed=0))) == 5
    import torch
    from gpt_mini.cpu import gemv_for_cpu  # auto's float32 candidate on gpt_mini's kernel, as the facts line names it
    assert "cpu, float32 on gpt_mini's kernel" in model_facts(gemv_for_cpu(memory, torch.float32))


def test_the_facts_line_says_which_path_serves_and_why(run_dir):
    pytest.importorskip("gradio")
    from gpt_mini.app import build_demo
    demo = build_demo(run_dir, device="cpu")
    try:
        facts = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "facts"][0].value
        assert "int8 weights" in facts and "nats from float32" in facts and run_dir.name in facts
    finally: demo.close()
    demo = build_demo(run_dir, device="cpu", precision="fp32", origin="the Space's model")
    try:
        facts = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "facts"][0].value
        assert "the Space's model · float32 as trained (asked for)" in facts
    finally: demo.close()


def test_export_space_with_int8(run_dir, tmp_path):
    out = export_space(run_dir, tmp_path/"space", precision="int8")
    assert "precision='int8'" in (out/"app.py").read_text()
    assert "precision='auto'" in (export_space(run_dir, tmp_path/"plain")/"app.py").read_text()



# ---------------------------------------------------------------- issue 15: values, ports, folders, exit statuses

def one_line(err: str) -> str:
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err

NAN, INF = float("nan"), float("inf")

@pytest.mark.parametrize("field, name", [("max_new_tokens", "Max new tokens"), ("temperature", "Temperature"),
                                         ("top_k", "Top-k"), ("top_p", "Top-p"), ("seed", "Seed")])
@pytest.mark.parametrize("value", [NAN, INF, -INF, "nan", "inf", "-Infinity", 10**400])
def test_check_request_refuses_every_non_finite_number(field, name, value):
    with pytest.raises(SamplerInputError, match=f"{name} must be a finite number"):
        check_request(GPTConfig.from_preset("tiny"), "Hi", **{field: value})

def test_check_request_with_a_padded_vocabulary():
    r = check_request(GPTConfig.from_preset("tiny", vocab_size=50304), "Hi", top_k=50_000, seed=1)
    assert r.top_k == 50_000 and r.notes == []

def test_sample_stream_never_sends_an_undecodable_id():
    import torch
    torch.manual_seed(0)
    padded = GPT(GPTConfig.from_preset("tiny", vocab_size=50304))
    with torch.no_grad(): padded.lm_head.weight[50257:] *= 100  # the padding rows would win every step
    for knobs in (dict(temperature=0), dict(temperature=1.0, top_k=0), dict(top_k=50), dict(top_p=0.9)):
        text, facts = list(sample_stream(padded, "Hi", max_new_tokens=8, seed=0, **knobs))[-1]
        assert text and "8 tokens" in facts

def test_nan_weights_are_a_clear_error_on_the_page():
    import torch
    from gpt_mini.model import NonFiniteLogitsError
    broken = GPT(GPTConfig.from_preset("tiny"))
    with torch.no_grad(): broken.lm_head.weight.fill_(NAN)
    with pytest.raises(NonFiniteLogitsError, match="the model produced NaN logits: its weights are not finite"):
        list(sample_stream(broken, "Hi", max_new_tokens=4, seed=0))
    demo = build_demo(broken)
    url = launch(demo, port=free_port(), quiet=True)
    try:
        with pytest.raises(AppError, match="NaN logits"): ask(Client(url, verbose=False, download_files=False), "Hi", 4)
    finally: demo.close()

@pytest.fixture
def taken_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen()
        yield s.getsockname()[1]

def test_app_cli_port_in_use_is_found_before_the_model_loads(run_dir, taken_port, capsys, monkeypatch):
    import gpt_mini.app as app
    def no_loading(*args, **kwargs): raise AssertionError("the model was loaded before the port was checked")
    monkeypatch.setattr(app, "build_demo", no_loading)
    assert app_cli(["--ckpt", str(run_dir), "--port", str(taken_port)]) == 1  # no_loading: before the model, not "fast"
    err = one_line(capsys.readouterr().err)
    assert f"--port {taken_port}" in err and "already in use" in err

def test_gpt_mini_app_port_in_use_in_a_subprocess(run_dir, taken_port):
    "The real command: one line, exit status 1, before Gradio's seconds of importing (let alone the model's loading)."
    script = (f"import sys; from gpt_mini.cli import main; rc = main(['app', '--ckpt', {str(run_dir)!r}, '--port', "
              f"'{taken_port}']); print(rc, 'gradio' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.split() == ["1", "False"] and f"--port {taken_port}" in one_line(r.stderr), (r.stdout, r.stderr)

@pytest.mark.parametrize("argv, flag", [(["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
                                        (["--port", "http"], "--port"), (["--concurrency", "0"], "--concurrency"),
                                        (["--device", "tpu"], "--device"), (["--bogus"], "--bogus")])
def test_app_cli_usage_errors_exit_2_in_one_line(run_dir, capsys, argv, flag):
    with pytest.raises(SystemExit) as e: app_cli(["--ckpt", str(run_dir), *argv])
    assert e.value.code == 2 and flag in one_line(capsys.readouterr().err)

def test_app_cli_ckpt_that_is_a_file(run_dir, capsys):
    assert app_cli(["--ckpt", str(run_dir/"config.json")]) == 1
    err = one_line(capsys.readouterr().err)
    assert "is a file, not a run folder" in err and str(run_dir) in err

@pytest.mark.parametrize("cli", [app_cli, export_space_cli])
def test_help_documents_the_exit_statuses(cli, capsys):
    with pytest.raises(SystemExit) as e: cli(["--help"])
    assert e.value.code == 0
    epilog = capsys.readouterr().out.split("exit status:")[1]
    for code in ("0 ", "1 ", "2 "): assert f"\n  {code}" in epilog, code

SPACE_NAMES = {"app.py", "requirements.txt", "README.md", "config.json", "model.safetensors", ".gitattributes"}

def test_export_space_refuses_a_folder_it_did_not_write(run_dir, tmp_path, capsys):
    mine = tmp_path/"mine"; mine.mkdir()
    for name, text in {"README.md": "my notes", "app.py": "print('mine')", "requirements.txt": "numpy"}.items():
        (mine/name).write_text(text)
    assert export_space_cli(["--ckpt", str(run_dir), "--out", str(mine)]) == 1
    err = one_line(capsys.readouterr().err)
    assert str(mine) in err and "--force" in err and "README.md" in err
    assert (mine/"README.md").read_text() == "my notes" and (mine/"app.py").read_text() == "print('mine')"
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "app.py", "requirements.txt"]  # nothing written
    with pytest.raises(OSError, match="did not write"): export_space(run_dir, mine)
    other = tmp_path/"other"; other.mkdir(); (other/"data.csv").write_text("1,2")  # no clash, still someone's folder
    assert export_space_cli(["--ckpt", str(run_dir), "--out", str(other)]) == 1 and "data.csv" in capsys.readouterr().err

def test_export_space_force_replaces_and_marks(run_dir, tmp_path, capsys):
    mine = tmp_path/"clone"; mine.mkdir(); (mine/"README.md").write_text("---\ntitle: x\n---\n")
    assert export_space_cli(["--ckpt", str(run_dir), "--out", str(mine), "--force"]) == 0
    assert "sdk: gradio" in (mine/"README.md").read_text() and (mine/".gpt_mini_space.json").is_file()
    assert SPACE_NAMES <= {p.name for p in mine.iterdir()}

def test_export_space_writes_again_into_its_own_folder(run_dir, tmp_path):
    out = export_space(run_dir, tmp_path/"space", title="first")
    marker = json.loads((out/".gpt_mini_space.json").read_text())
    assert marker["written_by"] == "gpt-mini export-space" and SPACE_NAMES <= set(marker["files"])
    assert export_space(run_dir, out, title="second") == out  # no --force needed
    assert "second" in (out/"app.py").read_text()

def test_export_space_into_an_empty_folder_or_an_empty_clone(run_dir, tmp_path):
    (tmp_path/"empty").mkdir()
    (tmp_path/"clone"/".git").mkdir(parents=True)
    for name in ("empty", "clone"): assert SPACE_NAMES <= {p.name for p in export_space(run_dir, tmp_path/name).iterdir()}

def test_a_full_disk_during_export_space_is_one_line_and_keeps_the_old_file(run_dir, tmp_path, capsys, monkeypatch):
    "Each Space file goes through run.atomic_write: a failed write names the file and leaves the one before untouched."
    import errno
    import gpt_mini.space as space
    out = export_space(run_dir, tmp_path/"space", title="first")
    filler = space._filler
    def full_disk_at_app_py(source):
        if isinstance(source, bytes) and source.startswith(b'"""A gpt_mini sampler'):
            def write(f): f.write(source[:10]); raise OSError(errno.ENOSPC, "No space left on device")
            return write
        return filler(source)
    monkeypatch.setattr(space, "_filler", full_disk_at_app_py)
    assert export_space_cli(["--ckpt", str(run_dir), "--out", str(out), "--title", "second"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out/"app.py") in err and "No space left on device" in err, err
    assert "exporting again" in err and "first" in (out/"app.py").read_text()  # the old app.py, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written temporary left behind

def test_export_space_out_is_a_file(run_dir, tmp_path, capsys):
    (tmp_path/"space.txt").write_text("x")
    for extra in ([], ["--force"]):
        assert export_space_cli(["--ckpt", str(run_dir), "--out", str(tmp_path/"space.txt"), *extra]) == 1
        assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    assert (tmp_path/"space.txt").read_text() == "x"

def test_export_space_never_writes_through_a_symlink(run_dir, tmp_path, capsys):
    out = export_space(run_dir, tmp_path/"space")
    precious = tmp_path/"precious.md"; precious.write_text("keep me")
    (out/"README.md").unlink(); (out/"README.md").symlink_to(precious)
    for extra in ([], ["--force"]):
        assert export_space_cli(["--ckpt", str(run_dir), "--out", str(out), *extra]) == 1
        assert "symbolic link" in one_line(capsys.readouterr().err)
    assert precious.read_text() == "keep me" and (out/"README.md").is_symlink()
    (tmp_path/"link").symlink_to(out, target_is_directory=True)  # --out itself a link
    assert export_space_cli(["--ckpt", str(run_dir), "--out", str(tmp_path/"link")]) == 1
    assert "symbolic link" in one_line(capsys.readouterr().err)

def test_export_space_ckpt_problems(run_dir, tmp_path, capsys):
    assert export_space_cli(["--ckpt", str(run_dir/"model.safetensors"), "--out", str(tmp_path/"s")]) == 1
    err = one_line(capsys.readouterr().err)
    assert "is a file, not a run folder" in err and str(run_dir) in err
    assert export_space_cli(["--ckpt", str(tmp_path/"nowhere"), "--out", str(tmp_path/"s")]) == 1
    assert "no run folder" in one_line(capsys.readouterr().err)
    assert not (tmp_path/"s").exists()  # nothing was written for a run that cannot be exported
    with pytest.raises(SystemExit) as e: export_space_cli(["--ckpt", str(run_dir), "--out", str(run_dir)])
    assert e.value.code == 2 and "run folder" in one_line(capsys.readouterr().err)


def test_facts_name_the_run_and_the_loss_of_the_weights_served(tmp_path):
    "The facts line names the run, not its path on the server, and gives the validation loss of the weights it serves."
    import json
    from gpt_mini.app import load_sampler_model
    from gpt_mini.model import GPT, GPTConfig
    from gpt_mini.run import save_model
    run = tmp_path/"secret"/"place"/"my-run"
    save_model(GPT(GPTConfig.from_preset("tiny")), run,
               {"steps_done": 40, "best_val_loss": 4.82, "final_val_loss": 6.56, "val_loss_full": 6.45})
    _, origin, _ = load_sampler_model(run, device="cpu", precision="fp32")
    assert origin == "run `my-run` (40 steps, validation loss of these weights 6.45)"
    assert "secret" not in origin and str(tmp_path) not in origin
    json.dump({"steps_done": 40, "best_val_loss": 4.82, "final_val_loss": 6.56}, open(run/"meta.json", "w"))
    assert load_sampler_model(run, device="cpu", precision="fp32")[1].endswith("validation loss of these weights 6.56)")


def test_anonymous_uploads_are_refused(server, subprocess_servers):
    """The page has no file input: Gradio's upload route refuses a 1 MiB file on the in-process sampler and on the
    exported Space alike, and the file cannot be read back."""
    import httpx
    proc, space_url, _ = subprocess_servers["space"]
    wait_for_server(proc, space_url)
    for url in (server[0], space_url):
        r = httpx.post(url + "gradio_api/upload", files={"files": ("big.bin", b"x" * (1 << 20))}, timeout=30)
        assert r.status_code >= 400, (url, r.status_code, r.text[:200])
        assert "big.bin" not in r.text
