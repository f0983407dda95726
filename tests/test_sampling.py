import subprocess, sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from gpt_mini.model import GPT, GPTConfig, sample_next, stream_text
from gpt_mini.sampling import (Candidate, effective_choices, explore_sample, filtered_probs, format_candidates,
                               keep_stats, knob_label, next_token_logits, next_token_table, plot_candidates,
                               plot_cutoffs, plot_knobs, plot_next_token, plot_temperature, sample_cli)

ROOT = Path(__file__).resolve().parents[1]

# A hand-made distribution: distinct logits, likeliest first, so "the k likeliest" is simply range(k).
LOGITS = torch.tensor([3.2, 2.5, 2.1, 1.8, 1.2, 0.6, 0.3, -0.4, -1.0, -1.5])
PROBS = LOGITS.softmax(-1)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9, 10])
def test_top_k_keeps_exactly_the_k_likeliest(k):
    p = filtered_probs(LOGITS, top_k=k)
    assert set(p.nonzero().flatten().tolist()) == set(range(k))
    assert torch.allclose(p[:k], PROBS[:k] / PROBS[:k].sum())  # renormalised, proportions unchanged
    assert keep_stats(LOGITS, top_k=k) == (k, pytest.approx(float(PROBS[:k].sum())))


def test_top_k_above_the_vocabulary_keeps_everything():
    assert torch.allclose(filtered_probs(LOGITS, top_k=1000), PROBS)


@pytest.mark.parametrize("p", [0.01, 0.2, 0.418, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
    kept = filtered_probs(LOGITS, top_p=p) > 0
    n = int(kept.sum())
    assert kept[:n].all() and not kept[n:].any()              # a prefix of the likeliest
    assert PROBS[:n].sum() >= p                               # reaches p...
    assert n == 1 or PROBS[:n - 1].sum() < p                  # ...and one token fewer would not


def test_top_p_one_and_none_keep_everything():
    assert torch.allclose(filtered_probs(LOGITS, top_p=1.0), PROBS)
    assert torch.allclose(filtered_probs(LOGITS, top_p=None), PROBS)


def test_temperature_to_zero_tends_to_argmax():
    tops = [float(filtered_probs(LOGITS, temperature=t)[0]) for t in (2.0, 1.0, 0.5, 0.2, 0.05, 0.01)]
    assert tops == sorted(tops) and tops[-1] > 0.999999
    assert torch.equal(filtered_probs(LOGITS, temperature=0), torch.eye(10)[0])  # 0 is greedy exactly
    assert (filtered_probs(LOGITS, temperature=1000.0) - 0.1).abs().max() < 1e-3  # and very hot is uniform
    assert torch.allclose(filtered_probs(LOGITS, temperature=1.0), PROBS)


def test_temperature_applies_before_top_p():
    # At T = 0.5 the top token alone holds 69% > 0.6; at T = 1 it holds 42%, so top-p 0.6 needs two tokens.
    assert keep_stats(LOGITS, temperature=0.5, top_p=0.6)[0] == 1
    assert keep_stats(LOGITS, temperature=1.0, top_p=0.6)[0] == 2


@pytest.mark.parametrize("knobs", [dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=3), dict(top_p=0.8),
                                   dict(temperature=0.7, top_k=5, top_p=0.9)])
def test_sample_next_draws_from_filtered_probs(knobs):
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(LOGITS.expand(20_000, -1), **knobs, generator=gen)
    freq = torch.bincount(draws, minlength=10) / 20_000
    expected = filtered_probs(LOGITS, **knobs)
    assert torch.allclose(expected.sum(), torch.tensor(1.0))
    assert (freq - expected).abs().max() < 0.015
    assert (freq[expected == 0] == 0).all()


@pytest.mark.parametrize("knobs, message", [(dict(temperature=-0.1), "temperature"), (dict(top_k=0), "top_k"),
                                            (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p")])
def test_bad_knobs_raise_the_library_message(knobs, message):
    with pytest.raises(ValueError, match=message): filtered_probs(LOGITS, **knobs)


def test_effective_choices_and_labels():
    assert effective_choices(torch.ones(4) / 4) == pytest.approx(4.0)
    assert effective_choices(torch.tensor([0.0, 1.0, 0.0])) == pytest.approx(1.0)
    assert knob_label(0.7, 40, 0.9) == "T=0.7, top-k=40, top-p=0.9"
    assert knob_label(1.0, None, 1.0) == "T=1"


# ---- on a (random) tiny model: the explorer's logic as plain functions ----

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny")).eval()


def test_next_token_table(tiny_model):
    rows = next_token_table(tiny_model, "ROMEO:", temperature=0.7, top_k=4, n=8)
    assert len(rows) == 8 and all(isinstance(r, Candidate) for r in rows)
    assert [r.p_model for r in rows] == sorted((r.p_model for r in rows), reverse=True)
    assert [r.p_sampled > 0 for r in rows] == [True] * 4 + [False] * 4
    assert sum(r.p_sampled for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert rows[0].token_id == int(next_token_logits(tiny_model, "ROMEO:").argmax())
    assert "model" in format_candidates(rows) and repr(rows[0].text) in format_candidates(rows)
    long_prompt = "to be or not " * 40  # longer than the context: cropped, like generate does
    assert next_token_logits(tiny_model, long_prompt).shape == (50257,)
    with pytest.raises(ValueError, match="empty"): next_token_logits(tiny_model, "")


def test_explore_sample_is_a_plain_function(tiny_model):
    pieces = []
    text, fig = explore_sample(tiny_model, "ROMEO:", temperature=0.9, top_k=20, top_p=0.95, max_new_tokens=12, seed=7,
                               on_text=pieces.append)
    assert isinstance(text, str) and text and isinstance(fig, Figure)
    assert pieces[-1] == text and all(b.startswith(a) for a, b in zip(pieces, pieces[1:]))
    again, _ = explore_sample(tiny_model, "ROMEO:", temperature=0.9, top_k=20, top_p=0.95, max_new_tokens=12, seed=7)
    assert again == text  # same seed, same text
    assert text == "".join(stream_text(tiny_model, "ROMEO:", 12, 0.9, 20, 0.95, 7))  # through the one sampling path
    # slider conventions: top-k 0 and top-p 1 mean no cut
    assert explore_sample(tiny_model, "ROMEO:", 0.9, 0, 1.0, 12, 7)[0] == "".join(stream_text(tiny_model, "ROMEO:", 12, 0.9, None, None, 7))
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 10 and "next token" in ax.get_title()


@pytest.mark.parametrize("kwargs, message", [(dict(prompt=""), "empty"), (dict(temperature=-1), "temperature"),
                                             (dict(top_p=0), "top_p"), (dict(max_new_tokens=-1), "max_new_tokens")])
def test_explore_sample_bad_values(tiny_model, kwargs, message):
    args = dict(prompt="ROMEO:", temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=5, seed=0) | kwargs
    with pytest.raises(ValueError, match=message): explore_sample(tiny_model, **args)


def test_plots_render(tiny_model, tmp_path):
    logits = next_token_logits(tiny_model, "ROMEO:")
    figs = [plot_knobs(LOGITS, [dict(), dict(top_k=3), dict(top_p=0.8), dict(temperature=0.5)], labels=list("abcdefghij")),
            plot_knobs(logits, [dict(temperature=0.7, top_p=0.9)]),
            plot_cutoffs({"a": logits, "b": LOGITS}), plot_temperature({"a": logits}),
            plot_next_token(tiny_model, "ROMEO:", 0.8, 5, 0.9),
            plot_candidates(next_token_table(tiny_model, "ROMEO:"))]
    for i, fig in enumerate(figs):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path/f"{i}.png", dpi=40)  # drawing runs layout and every artist: a broken plot fails here
        assert (tmp_path/f"{i}.png").stat().st_size > 2_000
    assert "other" in figs[1].axes[0].get_xticklabels()[-1].get_text()  # the tail of the vocabulary in one bar


# ---- gpt-mini sample ----

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    from gpt_mini.run import save_model
    return save_model(tiny_model, tmp_path_factory.mktemp("runs")/"tiny")


ARGS = ["--prompt", "ROMEO:", "--max-new-tokens", "15", "--temperature", "0.9", "--top-k", "30", "--top-p", "0.95"]


def test_sample_cli_streams_the_same_text_for_the_same_seed(run_dir, tiny_model, capsys):
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert first == "ROMEO:" + "".join(stream_text(tiny_model, "ROMEO:", 15, 0.9, 30, 0.95, 3)) + "\n"
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "4"]) == 0
    assert capsys.readouterr().out != first


def test_sample_cli_int8(run_dir, tiny_model, capsys):
    from gpt_mini.cpu import quantize_for_cpu
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3", "--int8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out == "ROMEO:" + "".join(stream_text(quantize_for_cpu(tiny_model), "ROMEO:", 15, 0.9, 30, 0.95, 3)) + "\n"


def test_sample_cli_bf16(run_dir, tiny_model, capsys):
    from gpt_mini.cpu import gemv_for_cpu
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3", "--precision", "bf16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out == "ROMEO:" + "".join(stream_text(gemv_for_cpu(tiny_model), "ROMEO:", 15, 0.9, 30, 0.95, 3)) + "\n"


def test_sample_cli_precision(run_dir, tiny_model, capsys):
    from gpt_mini.cpu import cpu_sampling_copy
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3", "--precision", "fp32", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == "ROMEO:" + "".join(stream_text(tiny_model, "ROMEO:", 15, 0.9, 30, 0.95, 3)) + "\n"
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3", "--precision", "auto", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    picked, why = cpu_sampling_copy(tiny_model.eval(), "auto")
    said = err.strip().removeprefix("gpt-mini sample: serving ")  # which path and why, on stderr: stdout is the text
    assert said != err.strip() and said.split(",")[0] == why.split(",")[0]  # (a float32 pick's timings vary)
    assert out == "ROMEO:" + "".join(stream_text(picked, "ROMEO:", 15, 0.9, 30, 0.95, 3)) + "\n"


def test_gpt_mini_sample_dispatches_here(run_dir, capsys):
    from gpt_mini.cli import main
    assert main(["sample", "--ckpt", str(run_dir), *ARGS, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", "3"])
    assert capsys.readouterr().out == out


def test_sample_cli_help_is_complete(capsys):
    with pytest.raises(SystemExit) as e: sample_cli(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for option in ["--ckpt", "--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--device",
                   "--int8", "--precision"]:
        assert option in help_text, option
    assert "gpt-mini sample" in help_text and "example" in help_text


@pytest.mark.parametrize("bad, message", [
    (["--temperature", "-1"], "temperature must be"), (["--top-k", "0"], "top_k must be"),
    (["--top-p", "1.5"], "top_p must be"), (["--top-p", "0"], "top_p must be"),
    (["--max-new-tokens", "-3"], "max_new_tokens"), (["--max-new-tokens", "ten"], "invalid int value"),
    (["--temperature", "hot"], "invalid float value"), (["--prompt", ""], "empty"),
    (["--device", "cuda:7" if not torch.cuda.is_available() else "tpu"], "evice"),
])
def test_sample_cli_bad_values_exit_2_with_a_message(run_dir, capsys, bad, message):
    with pytest.raises(SystemExit) as e: sample_cli(["--ckpt", str(run_dir), *bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "gpt-mini sample: error:" in err and "Traceback" not in err


def test_sample_cli_missing_or_broken_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: sample_cli(["--ckpt", str(tmp_path/"nowhere")])
    assert e.value.code == 1 and "nowhere" in capsys.readouterr().err  # the run's problem, not the command line's: 1
    with pytest.raises(SystemExit) as e: sample_cli([])  # --ckpt is required
    assert e.value.code == 2 and "--ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_gpt_mini_sampling(run_dir):
    ok = subprocess.run([sys.executable, "-m", "gpt_mini.sampling", "--ckpt", str(run_dir), *ARGS, "--seed", "3"],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ROMEO:") and len(ok.stdout) > len("ROMEO:\n")
    bad = subprocess.run([sys.executable, "-m", "gpt_mini.sampling", "--ckpt", str(run_dir), "--top-p", "2"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "top_p must be" in bad.stderr and "Traceback" not in bad.stderr



# ---- issue 15: non-finite values, seeds, vocabularies, files, exit statuses ----

def one_line_error(capsys, argv, code) -> str:
    "Run sample_cli, expecting exit status `code` and one line on stderr, no traceback; return that line."
    with pytest.raises(SystemExit) as e: sample_cli(argv)
    captured = capsys.readouterr()
    assert e.value.code == code, captured.err
    assert len(captured.err.splitlines()) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith("gpt-mini sample: error: ")
    return captured


@pytest.mark.parametrize("bad, flag", [
    (["--temperature", "nan"], "--temperature"), (["--temperature", "inf"], "--temperature"),
    (["--temperature", "-inf"], "--temperature"), (["--top-p", "nan"], "--top-p"), (["--top-p", "inf"], "--top-p"),
    (["--seed", str(2**64)], "--seed"), (["--seed", str(2**70)], "--seed"), (["--seed", "-1"], "--seed"),
    (["--seed", "x"], "--seed"), (["--bogus"], "--bogus"),
])
def test_sample_cli_refuses_bad_flags_up_front_in_one_line(run_dir, capsys, bad, flag):
    "Usage errors: exit status 2, one line naming the flag, before the prompt is printed (nothing on stdout)."
    captured = one_line_error(capsys, ["--ckpt", str(run_dir), "--prompt", "ROMEO:", *bad], 2)
    assert flag in captured.err and captured.out == ""


def test_sample_cli_seed_limits(run_dir, capsys):
    assert sample_cli(["--ckpt", str(run_dir), *ARGS, "--seed", str(2**64 - 1)]) == 0  # the largest seed works
    assert capsys.readouterr().out.startswith("ROMEO:")


def test_sample_cli_usage_errors_win_over_a_missing_run(tmp_path, capsys):
    "The command line is checked before the run folder is even looked at."
    assert "--temperature" in one_line_error(capsys, ["--ckpt", str(tmp_path/"nowhere"), "--temperature", "nan"], 2).err


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_sample_cli_ckpt_that_is_a_file(run_dir, capsys, name):
    err = one_line_error(capsys, ["--ckpt", str(run_dir/name)], 1).err
    assert "is a file, not a run folder" in err and str(run_dir) in err and "does not exist" not in err


def test_sample_cli_ckpt_that_is_another_file(tmp_path, capsys):
    (tmp_path/"notes.txt").write_text("hi")
    assert "is a file, not a run folder" in one_line_error(capsys, ["--ckpt", str(tmp_path/"notes.txt")], 1).err


def test_sample_cli_unreadable_run_exits_1(tmp_path, run_dir, capsys):
    broken = tmp_path/"broken"; broken.mkdir()
    (broken/"config.json").write_text("{not json")
    assert "config.json" in one_line_error(capsys, ["--ckpt", str(broken)], 1).err


def test_sample_cli_nan_weights_exit_1_with_one_line(tmp_path, capsys):
    from gpt_mini.run import save_model
    model = GPT(GPTConfig.from_preset("tiny"))
    with torch.no_grad(): model.lm_head.weight.fill_(float("nan"))
    run = save_model(model, tmp_path/"nan")
    for knobs in ([], ["--temperature", "0"], ["--top-k", "5"], ["--top-p", "0.9"]):
        err = one_line_error(capsys, ["--ckpt", str(run), "--prompt", "Hi", *knobs], 1).err
        assert "tensor transformer.wte.weight holds NaN or infinite values" in err  # lm_head is tied to it
        assert str(run) in err  # refused when loading, naming the file and the tensor, before any sampling


def test_sample_cli_with_a_padded_vocabulary(tmp_path, capsys):
    "nanoGPT's vocab_size 50304: the 47 extra ids have no text, and must never be sampled (they were: KeyError '50294')."
    from gpt_mini.run import save_model
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=50304))
    with torch.no_grad(): model.lm_head.weight[50257:] *= 100  # the padding rows would win every step
    run = save_model(model, tmp_path/"padded")
    for knobs in (["--temperature", "0"], ["--seed", "1"], ["--top-k", "80", "--seed", "2"], ["--top-p", "0.9", "--seed", "3"]):
        assert sample_cli(["--ckpt", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "12", *knobs]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("ROMEO:") and len(captured.out) > len("ROMEO:\n") and captured.err == ""


def test_sample_cli_with_a_smaller_vocabulary(tmp_path, capsys):
    from gpt_mini.run import save_model
    run = save_model(GPT(GPTConfig.from_preset("tiny", vocab_size=1000)), tmp_path/"small_vocab")
    err = one_line_error(capsys, ["--ckpt", str(run), "--prompt", "Hello"], 2).err
    assert "'Hello' (id 15496) is outside the model's vocabulary" in err
    assert sample_cli(["--ckpt", str(run), "--prompt", "!", "--max-new-tokens", "8", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("!")


def test_sample_cli_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit): sample_cli(["--help"])
    epilog = capsys.readouterr().out.split("exit status:")[1]
    for code in ("0 ", "1 ", "2 ", "130 "): assert f"\n  {code}" in epilog, code


def test_explorer_with_a_padded_or_broken_model():
    from gpt_mini.data import get_tokenizer
    from gpt_mini.model import NonFiniteLogitsError
    torch.manual_seed(0)
    padded = GPT(GPTConfig.from_preset("tiny", vocab_size=50304)).eval()
    with torch.no_grad(): padded.lm_head.weight[50257:] *= 100
    assert next_token_logits(padded, "ROMEO:").shape == (get_tokenizer().n_vocab,)  # only ids with a text
    rows = next_token_table(padded, "ROMEO:", n=5)
    assert all(r.token_id < 50257 for r in rows)
    wide = torch.full((50304,), -5.0); wide[50300] = 5.0  # logits from elsewhere, with a padding id on top
    fig = plot_knobs(wide, [dict()], n=3)
    assert "<id 50300>" in [t.get_text() for t in fig.axes[0].get_xticklabels()][0]
    with pytest.raises(ValueError, match="Token id 50257"): next_token_logits(GPT(GPTConfig.from_preset("tiny")), [50257])
    broken = GPT(GPTConfig.from_preset("tiny"))
    with torch.no_grad(): broken.lm_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLogitsError, match="NaN logits"): next_token_table(broken, "Hi")
    with pytest.raises(NonFiniteLogitsError, match="NaN logits"): explore_sample(broken, "Hi", max_new_tokens=3)


@pytest.mark.parametrize("knobs", [dict(temperature=float("nan")), dict(temperature=float("inf")),
                                   dict(top_p=float("nan")), dict(top_k=float("nan"))])
def test_filtered_probs_refuses_non_finite_knobs(knobs):
    with pytest.raises(ValueError, match=list(knobs)[0]): filtered_probs(LOGITS, **knobs)


@pytest.mark.slow
def test_gpt_mini_sample_exit_statuses_in_a_subprocess(run_dir, tmp_path):
    "Through the real entry point: usage 2, runtime 1, each a single line on stderr."
    for argv, code in [(["--ckpt", str(run_dir), "--seed", str(2**64)], 2), (["--ckpt", str(run_dir/"config.json")], 1)]:
        r = subprocess.run([sys.executable, "-m", "gpt_mini.cli", "sample", *argv], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == code and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr


def test_auto_precision_serves_a_model_with_infinite_logits_as_it_is():
    # finite weights whose logits overflow: the probe cannot measure int8, and the app must still start (each request
    # then says what is wrong), not fail at start-up with a usage error
    from gpt_mini.cpu import cpu_sampling_copy
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    with torch.no_grad(): model.transformer.ln_f.weight.fill_(1e38); model.lm_head.weight.fill_(1e38)
    served, why = cpu_sampling_copy(model)
    assert served is model and "not finite" in why
