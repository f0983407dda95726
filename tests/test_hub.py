"""`gpt-mini export-hf`: a trained run folder as a transformers GPT-2, loaded back offline; and `--push`, stopped at
huggingface_hub's boundary (no network)."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

transformers = pytest.importorskip("transformers", reason="export-hf needs transformers (the dev extra)")
huggingface_hub = pytest.importorskip("huggingface_hub")
import torch

from gpt_mini import hub
from gpt_mini.data import encode, get_tokenizer
from gpt_mini.hub import MARKER, export_hf, export_hf_cli, tokenizer_files
from gpt_mini.model import GPT, GPTConfig, generate, stream_text
from gpt_mini.train import TrainConfig, train
from gpt_mini.run import load_model, save_model

pytestmark = pytest.mark.slow  # a trained run exported and loaded back by transformers: `pytest -m "not slow"` leaves it out

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["ROMEO:", "To be, or not to be", "  two spaces, then\nnewline"]
ODD = ["", " ", "   leading spaces", "trailing   \n\n\n", "tabs\tand\r\nwindows", "I'm sure they'll've done't",
       "3.14159 and 1,000,000", "naïve café, déjà vu", "日本語のテキスト", "emoji 🙂👍🏽 and ZWJ 👨‍👩‍👧",
       "\u00a0nbsp\u200bzero width", "Ġ and Ċ typed as text", "   \n  \t \n", "!!!???...---", "12345678901234567890",
       "control \x00\x07\x1b bytes", "x" * 300, " " * 50 + "a"]

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    "A run folder trained on tiny Shakespeare for a few steps, as `gpt-mini train` writes it."
    if not (os.environ.get("GPT_MINI_DATA") or (ROOT.parent/"shared"/"data"/"tinyshakespeare.txt").is_file()):
        pytest.skip("tiny Shakespeare is not available here (set GPT_MINI_DATA)")
    os.environ.setdefault("GPT_MINI_DATA", str(ROOT.parent/"shared"/"data"/"tinyshakespeare.txt"))
    out = tmp_path_factory.mktemp("runs")/"tiny"
    # trained at the model's full context (64): transformers' generate does not slide a window past the last position
    return train(TrainConfig.from_preset("tiny", out=str(out), steps=10, eval_every=5, overwrite=True, progress=False,
                                         live_plot=False, seq_len=64)).run_dir

@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export_hf(run_dir, tmp_path_factory.mktemp("export")/"hf")

@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> tuple[Path, Path]:
    "(run folder, its export) for a freshly initialised tiny model, whose greedy choices are arbitrary near-ties."
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("untrained")
    run = save_model(GPT(GPTConfig.from_preset("tiny")), base/"run")
    return run, export_hf(run, base/"hf")

@pytest.fixture(scope="module")
def loaded(exported):
    "The export as transformers loads it: (model, tokenizer)."
    return (transformers.AutoModelForCausalLM.from_pretrained(exported).eval(),
            transformers.AutoTokenizer.from_pretrained(exported))

def cli(*argv) -> int: return export_hf_cli([str(a) for a in argv])

def greedy_hf(model, tok, prompt: str, n: int) -> list[int]:
    "transformers' greedy continuation of `prompt`: the new token ids."
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad(): out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                               max_new_tokens=n, pad_token_id=tok.eos_token_id)
    return out[0, ids.shape[1]:].tolist()

# ---------------------------------------------------------------- the folder, loaded by transformers

def test_the_folder_holds_what_transformers_and_the_hub_read(exported, run_dir):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "README.md", "loss.png", MARKER} <= names
    assert not [n for n in names if n.startswith(".export-hf-") or n.endswith(".tmp")]  # no staging left behind
    cfg, ours = json.loads((exported/"config.json").read_text()), json.loads((run_dir/"config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]) == \
           (ours["n_layer"], ours["n_head"], ours["n_embd"], ours["block_size"], ours["vocab_size"])
    gen = json.loads((exported/"generation_config.json").read_text())
    assert gen["eos_token_id"] == gen["bos_token_id"] == 50256
    assert json.loads((exported/"tokenizer_config.json").read_text())["model_max_length"] == ours["block_size"]

def test_transformers_loads_it_offline_and_writes_gpt_minis_greedy_text(loaded, run_dir):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: nothing may come from the network
    model, tok = loaded
    assert type(model).__name__ == "GPT2LMHeadModel"
    ours = load_model(run_dir)
    for prompt in PROMPTS:
        theirs = greedy_hf(model, tok, prompt, 30)
        assert theirs == list(generate(ours, encode(prompt), 30, temperature=0)), prompt
        assert tok.decode(theirs) == "".join(stream_text(ours, prompt, max_new_tokens=30, temperature=0)), prompt

def test_greedy_text_matches_for_an_untrained_model_too(untrained):
    run, folder = untrained  # arbitrary tokens at every step: a wrong weight, position or cache would show
    ours = list(generate(load_model(run), encode(PROMPTS[1]), 50, temperature=0))
    assert len(set(ours)) > 2
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert greedy_hf(model, tok, PROMPTS[1], 50) == ours

def test_logits_agree(loaded, run_dir):
    ids = torch.tensor([encode("ROMEO:\nBut soft, what light through yonder window breaks?")])
    with torch.no_grad():
        theirs = loaded[0](ids).logits
        ours = load_model(run_dir)(ids)
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()

def test_pipeline_runs(exported, run_dir):
    writer = transformers.pipeline("text-generation", model=str(exported), device="cpu")
    greedy = writer("ROMEO:", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert greedy == "ROMEO:" + "".join(stream_text(load_model(run_dir), "ROMEO:", max_new_tokens=12, temperature=0))
    sampled = writer("ROMEO:", max_new_tokens=12, do_sample=True, temperature=0.8, top_k=50)[0]["generated_text"]
    assert sampled.startswith("ROMEO:") and len(sampled) > len("ROMEO:")

def test_gpt_mini_loads_the_export_back(exported, run_dir):
    back, ours = GPT.from_pretrained(str(exported)).state_dict(), load_model(run_dir).state_dict()
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)

# ---------------------------------------------------------------- the tokenizer

def texts(corpus) -> list[str]:
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    return ["".join(lines[:400])] + lines[:400:3] + lines[-50:] + ODD

@pytest.mark.parametrize("files", ["all", "vocab.json and merges.txt only"])
def test_tokenizer_matches_tiktoken(exported, corpus, tmp_path, files):
    folder = exported
    if files != "all":  # transformers builds its tokenizer from the two classic files alone
        folder = tmp_path/"slow"
        folder.mkdir()
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
            shutil.copyfile(exported/name, folder/name)
    tok, enc = transformers.AutoTokenizer.from_pretrained(folder), get_tokenizer()
    fast = None
    if files == "all":  # tokenizer.json on its own, as tools outside transformers read it
        from tokenizers import Tokenizer
        fast = Tokenizer.from_file(str(exported/"tokenizer.json"))
    for t in texts(corpus):
        ids = enc.encode_ordinary(t)
        assert tok(t)["input_ids"] == ids, repr(t[:80])
        assert tok.decode(ids) == t, repr(t[:80])
        if fast is not None: assert fast.encode(t).ids == ids and fast.decode(ids) == t, repr(t[:80])
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.eos_token_id == enc.eot_token
    assert tok("a<|endoftext|>b")["input_ids"] == [64, 50256, 65]  # GPT-2's special token, as transformers reads it

def test_tokenizer_files_are_tiktokens_own_gpt2_files():
    "Derived from the ranks alone, vocab.json and merges.txt equal the encoder.json and vocab.bpe tiktoken downloaded."
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR", ""))
    files = [p for p in cache.iterdir() if p.is_file()] if cache.is_dir() else []
    bpe = [p for p in files if p.read_bytes()[:13] == b"#version: 0.2"]
    encoder = [p for p in files if p.read_bytes()[:1] == b"{" and b'"<|endoftext|>"' in p.read_bytes()]
    if not (bpe and encoder): pytest.skip("tiktoken's cache of GPT-2's files is not here (TIKTOKEN_CACHE_DIR)")
    ours = tokenizer_files(1024)
    assert ours["merges.txt"].encode("utf-8") == bpe[0].read_bytes()
    assert json.loads(ours["vocab.json"]) == json.loads(encoder[0].read_text(encoding="utf-8"))

# ---------------------------------------------------------------- the model card

def test_model_card_front_matter_and_body(exported, run_dir):
    card = huggingface_hub.ModelCard((exported/"README.md").read_text(encoding="utf-8"))
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["license"] == "apache-2.0" and "gpt2" in data["tags"]
    assert data["datasets"] == ["karpathy/tiny_shakespeare"]  # recognised by the text's sha256
    meta = json.loads((run_dir/"meta.json").read_text())
    body = card.text
    assert f"| steps | {meta['steps_done']} of {meta['steps_planned']}" in body
    assert f"{meta['final_val_loss']:.3f}" in body and f"{meta['final_train_loss']:.3f}" in body
    assert 'pipeline("text-generation"' in body and "GPT.from_pretrained" in body and "gpt-mini sample" in body
    assert str(Path(meta["data"]["path"]).parent) not in body  # the file's name, never where it lives on this disk
    assert "![Training and validation loss](loss.png)" in body

# ---------------------------------------------------------------- the folder's safety

def test_refuses_a_foreign_non_empty_folder(run_dir, tmp_path, capsys):
    out = tmp_path/"mine"
    out.mkdir(); (out/"notes.txt").write_text("mine")
    assert cli("--ckpt", run_dir, "--out", out) == 1  # the folder's problem, not the command line's
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--out" in err and "--force" in err and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    assert cli("--ckpt", run_dir, "--out", out, "--force") == 0
    assert (out/"notes.txt").read_text() == "mine" and (out/"model.safetensors").is_file()
    assert cli("--ckpt", run_dir, "--out", out) == 0  # now it is an export-hf folder: no --force needed

def test_refuses_the_run_folder_itself_and_a_missing_run(run_dir, tmp_path, capsys):
    before = sorted(p.name for p in run_dir.iterdir())
    assert cli("--ckpt", run_dir, "--out", run_dir, "--force") == 2
    assert "run folder itself" in capsys.readouterr().err and sorted(p.name for p in run_dir.iterdir()) == before
    assert cli("--ckpt", tmp_path/"no-such-run", "--out", tmp_path/"x") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--ckpt" in err and "no-such-run" in err
    assert not (tmp_path/"x").exists()

def test_an_empty_clone_of_a_hub_repository_is_fine(untrained, tmp_path):
    out = tmp_path/"clone"
    (out/".git").mkdir(parents=True)
    (out/".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    assert cli("--ckpt", untrained[0], "--out", out) == 0 and (out/"config.json").is_file()

def test_exporting_again_replaces_its_own_files_only(run_dir, untrained, tmp_path):
    out = export_hf(run_dir, tmp_path/"hf")
    (out/"my-notes.md").write_text("kept")
    export_hf(untrained[0], out)  # a run without loss.png or meta.json, into the same folder
    assert not (out/"loss.png").exists() and (out/"my-notes.md").read_text() == "kept"
    assert "no `meta.json`" in (out/"README.md").read_text()
    marker = json.loads((out/MARKER).read_text())
    assert marker["complete"] and "loss.png" not in marker["files"] and "model.safetensors" in marker["files"]

def test_a_failed_write_leaves_the_previous_export_whole(exported, run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path/"hf"
    shutil.copytree(exported, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != MARKER}
    def disk_full(*a, **kw): raise OSError(28, "No space left on device")
    monkeypatch.setattr(hub, "tokenizer_files", disk_full)
    assert cli("--ckpt", run_dir, "--out", out) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left" in err and str(out) in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != MARKER} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".export-hf-")]  # the staging folder is gone

# ---------------------------------------------------------------- --push, at huggingface_hub's boundary

@pytest.fixture
def no_token(monkeypatch, tmp_path):
    "No token anywhere huggingface_hub looks: not in the environment, not in its token file."
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"): monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path/"no-token-here"))
    assert huggingface_hub.get_token() is None

@pytest.fixture
def hub_calls(monkeypatch) -> list:
    "Record create_repo and upload_folder instead of sending them."
    calls = []
    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload_folder", kw)))
    return calls

def test_push_without_a_token_says_so_in_one_line(no_token, hub_calls, run_dir, tmp_path, capsys):
    assert cli("--ckpt", run_dir, "--out", tmp_path/"hf", "--push", "me/tiny") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Hugging Face token" in err and "login" in err
    assert err.endswith("or set HF_TOKEN")
    assert hub_calls == [] and not (tmp_path/"hf").exists()  # told before anything was exported or sent

def test_push_with_a_token_creates_the_repo_and_uploads_the_folder(no_token, hub_calls, run_dir, tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    out = tmp_path/"hf"
    assert cli("--ckpt", run_dir, "--out", out, "--push", "me/gpt-mini-tiny", "--private") == 0
    assert hub_calls[0] == ("create_repo", "me/gpt-mini-tiny",
                            dict(token="hf_not_a_real_token", repo_type="model", private=True, exist_ok=True))
    kind, kw = hub_calls[1]
    assert kind == "upload_folder" and len(hub_calls) == 2
    assert (kw["repo_id"], Path(kw["folder_path"]), kw["repo_type"], kw["token"]) == \
           ("me/gpt-mini-tiny", out, "model", "hf_not_a_real_token")
    assert MARKER in kw["ignore_patterns"]
    assert "https://huggingface.co/me/gpt-mini-tiny" in capsys.readouterr().out
    assert 'model="me/gpt-mini-tiny"' in (out/"README.md").read_text()  # the card's snippet names the repository

def test_push_of_a_bare_name_uploads_to_the_namespace_the_hub_gives(no_token, hub_calls, exported, monkeypatch):
    assert hub.push_to_hub(exported, "tiny", token="hf_x") == "https://huggingface.co/me/tiny"
    assert hub_calls[0][2]["private"] is None and hub_calls[1][1]["repo_id"] == "me/tiny"

def test_a_hub_error_is_one_line(no_token, run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    def offline(self, *a, **kw):
        raise huggingface_hub.errors.OfflineModeIsEnabled("Cannot reach the Hub:\noffline mode is on")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", offline)
    assert cli("--ckpt", run_dir, "--out", tmp_path/"hf", "--push", "me/x") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "me/x" in err and "offline mode" in err
    assert (tmp_path/"hf"/"model.safetensors").is_file()  # the export itself is done and kept

def test_a_malformed_repo_id_or_license_is_a_usage_error(run_dir, tmp_path, capsys):
    assert cli("--ckpt", run_dir, "--out", tmp_path/"hf", "--push", "not a/repo/id") == 2
    assert "--push" in capsys.readouterr().err and not (tmp_path/"hf").exists()
    assert cli("--ckpt", run_dir, "--out", tmp_path/"hf", "--license", "MIT: or so") == 2
    assert "--license" in capsys.readouterr().err and not (tmp_path/"hf").exists()

# ---------------------------------------------------------------- the command

def test_gpt_mini_export_hf_is_a_command(capsys):
    from gpt_mini.cli import COMMANDS, main
    assert COMMANDS["export-hf"][:2] == ("gpt_mini.hub", "export_hf_cli")
    assert main(["export-hf", "--help"]) == 0
    help_ = capsys.readouterr().out
    assert all(flag in help_ for flag in ("--ckpt", "--out", "--push", "--force", "--private"))

def test_usage_errors_exit_2_with_one_line_from_the_console_script(tmp_path):
    exe = Path(sys.executable).with_name("gpt-mini")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gpt_mini.cli"]
    r = subprocess.run([*cmd, "export-hf", "--ckpt", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--out" in r.stderr, r.stderr


# ---------------------------------------------------------------- export-space --push

def space_cli(*argv) -> int:
    from gpt_mini.space import export_space_cli
    try: return export_space_cli([str(a) for a in argv])
    except SystemExit as e: return e.code


def test_export_space_push_uploads_a_gradio_space(no_token, hub_calls, run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    out = tmp_path/"space"
    assert space_cli("--ckpt", run_dir, "--out", out, "--push", "me/sampler", "--private") == 0
    assert hub_calls[0] == ("create_repo", "me/sampler", dict(token="hf_not_a_real_token", repo_type="space", private=True,
                                                              exist_ok=True, space_sdk="gradio"))
    kind, kw = hub_calls[1]
    assert kind == "upload_folder" and Path(kw["folder_path"]) == out and kw["repo_type"] == "space"
    assert ".gpt_mini_space.json" in kw["ignore_patterns"]
    assert "https://huggingface.co/spaces/me/sampler" in capsys.readouterr().out


def test_export_space_push_without_a_token_writes_nothing(no_token, hub_calls, run_dir, tmp_path, capsys):
    assert space_cli("--ckpt", run_dir, "--out", tmp_path/"space", "--push", "me/sampler") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Hugging Face token" in err
    assert hub_calls == [] and not (tmp_path/"space").exists()
    assert space_cli("--ckpt", run_dir, "--out", tmp_path/"space", "--push", "not a/repo/id") == 2
    assert "--push" in capsys.readouterr().err and not (tmp_path/"space").exists()


def test_config_json_has_n_ctx_for_llama_cpp(run_dir, tmp_path):
    "llama.cpp's convert_hf_to_gguf.py reads GPT-2's `n_ctx` (OpenAI's own config.json has it); transformers keeps it."
    out = export_hf(run_dir, tmp_path/"hf")
    config = json.loads((out/"config.json").read_text())
    assert config["n_ctx"] == config["n_positions"] == 64


LLAMA_CPP = os.environ.get("GPT_MINI_LLAMA_CPP")  # a llama.cpp source folder with build/bin/llama-simple
GGUF_NAMES = {"token_embd": "transformer.wte", "position_embd": "transformer.wpe", "output_norm": "transformer.ln_f",
              "attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
              "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}

@pytest.mark.skipif(not (LLAMA_CPP and (Path(LLAMA_CPP)/"build"/"bin"/"llama-simple").is_file()),
                    reason="no llama.cpp build (set GPT_MINI_LLAMA_CPP to a llama.cpp source folder, built)")
@pytest.mark.parametrize("which", ["trained", "untrained"])
def test_llama_cpp_converts_the_export_and_writes_the_same_greedy_text(which, run_dir, exported, untrained):
    run, export = (run_dir, exported) if which == "trained" else untrained
    gguf_file = hub.gguf_from_export(export, LLAMA_CPP)
    sys.path.insert(0, str(Path(LLAMA_CPP)/"gguf-py"))
    from gguf import GGUFReader
    ours = {k: v.numpy() for k, v in load_model(run).state_dict().items()}
    tensors = GGUFReader(gguf_file).tensors
    for t in tensors:  # every tensor of the GGUF file is the run's own, bit for bit
        parts = t.name.split(".")
        name = (f"transformer.h.{parts[1]}.{GGUF_NAMES[parts[2]]}.{parts[3]}" if parts[0] == "blk"
                else f"{GGUF_NAMES[parts[0]]}.{parts[1]}")
        assert (t.data.reshape(ours[name].shape) == ours[name]).all(), t.name
    assert len(tensors) == len(ours) - 1  # all but the head, which is the embedding (tied)
    prompt = "ROMEO:\nBut soft, what light"
    printed = subprocess.run([str(Path(LLAMA_CPP)/"build"/"bin"/"llama-simple"), "-m", str(gguf_file), "-n", "40", prompt],
                             check=True, capture_output=True, text=True).stdout
    assert printed.removesuffix("\n") == prompt + "".join(stream_text(load_model(run), prompt, 40, temperature=0))


def test_gguf_from_export_names_a_folder_without_the_converter(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="has no convert_hf_to_gguf.py"): hub.gguf_from_export(exported, tmp_path)
