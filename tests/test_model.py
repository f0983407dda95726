"GPT: config, parameter count, init, parity with transformers' GPT-2, generation and its errors, the attention explorer."
import math

import pytest
import torch
import torch.nn.functional as F

from gpt_mini.data import decode, encode, get_tokenizer
from gpt_mini.model import (GPT, PRESETS, GPTConfig, NonFiniteLogitsError, PretrainedError, attention_maps, count_params,
                            generate, num_params, sample_next, stream_text, top_k_filter, top_p_filter)

TINY = GPTConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(TINY).eval()


# ---- config -------------------------------------------------------------------------------------------------------

def test_presets():
    assert GPTConfig.from_preset("gpt2") == GPTConfig(12, 12, 768, 1024, 50257, 0.0, True)
    assert (TINY.n_layer, TINY.n_head, TINY.n_embd, TINY.block_size) == (2, 2, 64, 64)
    small = GPTConfig.from_preset("small", dropout=0.1)
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size, small.dropout) == (4, 4, 256, 256, 0.1)
    for name in PRESETS: GPTConfig.from_preset(name)
    with pytest.raises(ValueError, match="Unknown preset 'nope'"): GPTConfig.from_preset("nope")


def test_config_dict_roundtrip_and_errors():
    d = TINY.to_dict()
    assert GPTConfig.from_dict(d) == TINY
    with pytest.raises(ValueError, match="missing field.*n_head"):
        GPTConfig.from_dict({k: v for k, v in d.items() if k != "n_head"})
    with pytest.raises(ValueError, match="unknown field.*flash"): GPTConfig.from_dict({**d, "flash": True})
    with pytest.raises(ValueError, match="n_layer"): GPTConfig.from_dict({**d, "n_layer": 0})
    with pytest.raises(ValueError, match="n_embd"): GPTConfig.from_dict({**d, "n_embd": "64"})
    with pytest.raises(ValueError, match="dropout"): GPTConfig.from_dict({**d, "dropout": 1.5})
    with pytest.raises(ValueError, match="divisible"): GPTConfig.from_dict({**d, "n_embd": 65})


# ---- the model ----------------------------------------------------------------------------------------------------

def test_gpt2_124m_parameter_count():
    model = GPT(GPTConfig.from_preset("gpt2"))
    assert num_params(model) == 124_439_808 == count_params(model.config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    # GPT-2 initialisation: std 0.02, residual projections scaled by 1/sqrt(2·n_layer)
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3
    assert abs(model.transformer.h[0].attn.c_proj.weight.std().item() - 0.02 / math.sqrt(24)) < 1e-4
    assert model.transformer.h[0].attn.c_attn.bias.abs().max() == 0


@pytest.mark.parametrize("cfg", [TINY, GPTConfig(3, 4, 48, 32, vocab_size=100, bias=False)])
def test_count_params_matches_instance(cfg):
    assert count_params(cfg) == num_params(GPT(cfg))


def test_forward_logits_and_loss(tiny):
    idx = torch.randint(0, TINY.vocab_size, (3, 10))
    logits = tiny(idx)
    assert logits.shape == (3, 10, TINY.vocab_size)
    targets = torch.randint(0, TINY.vocab_size, (3, 10)); targets[0, :4] = -1
    logits2, loss = tiny(idx, targets)
    assert torch.equal(logits, logits2)
    keep = targets != -1
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], targets[keep]))
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.5  # a fresh model is close to uniform
    with pytest.raises(ValueError, match="context"): tiny(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


def test_model_causality(tiny):
    idx = torch.randint(0, TINY.vocab_size, (2, 20))
    with torch.no_grad():
        base = tiny(idx)
        changed = idx.clone(); changed[:, 12] = (changed[:, 12] + 1) % TINY.vocab_size
        out = tiny(changed)
    assert torch.equal(out[:, :12], base[:, :12])
    assert not torch.allclose(out[:, 12], base[:, 12])


# ---- parity with transformers' GPT-2 -------------------------------------------------------------------------------

def _parity(cfg, T=64):
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = ours.to_hf()
    idx = torch.randint(0, cfg.vocab_size, (2, T))
    with torch.no_grad():
        ours_logits, hf_logits = ours(idx), hf(idx).logits
    assert (ours_logits - hf_logits).abs().max() <= 1e-4
    back = GPT.from_hf(hf)  # and the other way: transformers → ours gives back the same weights
    assert back.config == cfg
    sd, sd_back = ours.state_dict(), back.state_dict()
    assert all(torch.equal(sd[k], sd_back[k]) for k in sd)
    assert back.lm_head.weight is back.transformer.wte.weight


def test_hf_parity_small():
    _parity(GPTConfig.from_preset("small"))


@pytest.mark.slow
def test_hf_parity_gpt2_124m():
    _parity(GPTConfig.from_preset("gpt2"), T=32)


def test_from_hf_on_a_transformers_model():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=48, vocab_size=300, bos_token_id=0,
                                      eos_token_id=0)).eval()
    ours = GPT.from_hf(hf)
    idx = torch.randint(0, 300, (2, 48))
    with torch.no_grad(): assert (ours(idx) - hf(idx).logits).abs().max() <= 1e-4


def test_to_hf_refuses_bias_free_models():
    with pytest.raises(ValueError, match="bias"): GPT(GPTConfig(2, 2, 32, 16, vocab_size=50, bias=False)).to_hf()


def test_from_pretrained_offline_fails_clearly(monkeypatch, tmp_path):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch it too, no network
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE"):
        GPT.from_pretrained("gpt2", cache_dir=str(tmp_path))  # an empty cache: nothing to find


# ---- sampling -----------------------------------------------------------------------------------------------------

def test_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert top_k_filter(logits, 2).isinf().tolist() == [[True, False, False, True]]
    assert torch.equal(top_k_filter(logits, 10_000), logits)  # k above the vocabulary: clamped
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert top_p_filter(probs, 0.7).isinf().tolist() == [False, False, True, True]
    assert top_p_filter(probs, 0.8).isinf().tolist() == [False, False, True, True]
    assert top_p_filter(probs, 0.81).isinf().tolist() == [False, False, False, True]
    assert top_p_filter(probs, 0.01).isinf().tolist() == [False, True, True, True]  # the top token always stays
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_sample_next():
    logits = torch.randn(3, 50)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, top_k=1), logits.argmax(-1))
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(sample_next(logits, 0.9, 10, 0.9, g()), sample_next(logits, 0.9, 10, 0.9, g()))
    picks = sample_next(logits[0].expand(2000, 50), top_k=5, generator=g())
    assert set(picks.tolist()) <= set(logits[0].topk(5).indices.tolist())


@pytest.mark.parametrize("top_k, top_p", [(None, None), (3, None), (None, 0.8), (4, 0.7), (100, 0.9), (None, 0.999)])
def test_sample_next_draws_from_the_filtered_distribution(top_k, top_p):
    "sample_next's fast paths give the distribution the filters (and the sampling chapter) describe."
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -3.0])
    expected = top_p_filter(top_k_filter(logits / 0.8, top_k), top_p).softmax(-1)
    draws = sample_next(logits.expand(40_000, 7), 0.8, top_k, top_p, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=7) / 40_000
    assert freq[expected == 0].sum() == 0
    assert (freq - expected).abs().max() < 0.01


@pytest.mark.parametrize("kwargs, match", [
    (dict(idx=[]), "empty"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.01), "top_p"),
    (dict(temperature=-0.1), "temperature"), (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_generate_errors_are_raised_at_call_time(tiny, kwargs, match):
    args = dict(idx=[1, 2, 3], max_new_tokens=5) | kwargs
    with pytest.raises(ValueError, match=match): generate(tiny, **args)  # before the first next()


def test_stream_text_errors(tiny):
    with pytest.raises(ValueError, match="empty"): stream_text(tiny, "")
    with pytest.raises(ValueError, match="top_p"): stream_text(tiny, "Hi", top_p=2)


def test_generate_basics(tiny):
    assert list(generate(tiny, [1, 2], 0)) == []
    out = list(generate(tiny, torch.tensor([[1, 2]]), 7, temperature=0.8, top_k=100_000, top_p=0.9, seed=0))
    assert len(out) == 7 and all(isinstance(t, int) and 0 <= t < TINY.vocab_size for t in out)
    assert tiny.training is False
    tiny.train(); list(generate(tiny, [1], 2)); assert tiny.training; tiny.eval()  # mode restored


def test_generation_leaves_grad_mode_alone_between_tokens(tiny):
    tokens = generate(tiny, [1, 2, 3], 3, seed=0)
    next(tokens)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # while the generator is suspended
    assert tiny(torch.tensor([[1, 2]])).requires_grad


def test_seed_is_reproducible_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a = list(generate(tiny, [5, 6, 7], 30, temperature=1.0, seed=123))
    b = list(generate(tiny, [5, 6, 7], 30, temperature=1.0, seed=123))
    c = list(generate(tiny, [5, 6, 7], 30, temperature=1.0, seed=124))
    assert a == b != c
    assert torch.equal(torch.get_rng_state(), state)


def _reference_greedy(model, prompt, n):
    "Greedy decoding by full forward passes, following generate's documented window: crop the prompt to block_size; when "
    "the window is full, keep its last 3/4·block_size tokens (the new one included)."
    bs = model.config.block_size
    keep, window, out = (3 * bs) // 4, list(prompt)[-bs:], []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(torch.tensor([window]))[0, -1].argmax())
            out.append(t)
            window = (window + [t])[-keep:] if len(window) == bs else window + [t]
    return out


@pytest.mark.slow
def test_greedy_with_cache_equals_without_for_200_tokens(tiny):
    prompt = torch.randint(0, TINY.vocab_size, (10,), generator=torch.Generator().manual_seed(0)).tolist()
    cached = list(generate(tiny, prompt, 200, temperature=0))           # block_size 64: slides 4 times
    uncached = list(generate(tiny, prompt, 200, temperature=0, use_cache=False))
    assert cached == uncached == _reference_greedy(tiny, prompt, 200)
    assert len(set(cached)) > 1


def test_greedy_within_context_is_plain_greedy(tiny):
    "Until the context is full, generate is exactly 'append the argmax of the last logits'."
    prompt = [464, 2068, 7586]
    idx, expected = torch.tensor([prompt]), []
    with torch.no_grad():
        for _ in range(TINY.block_size - len(prompt)):
            t = tiny(idx)[0, -1].argmax().item(); expected.append(t)
            idx = torch.cat([idx, torch.tensor([[t]])], 1)
    assert list(generate(tiny, prompt, len(expected), temperature=0)) == expected


def test_long_prompt_is_cropped_from_the_left(tiny):
    prompt = torch.randint(0, TINY.vocab_size, (3 * TINY.block_size,)).tolist()
    assert list(generate(tiny, prompt, 20, temperature=0)) == \
           list(generate(tiny, prompt[-TINY.block_size:], 20, temperature=0))


# ---- text streaming -----------------------------------------------------------------------------------------------

def test_stream_text_joins_to_the_decoded_tokens(tiny):
    pieces = list(stream_text(tiny, "To be, or not", 40, temperature=1.0, seed=7))
    assert "".join(pieces) == decode(list(generate(tiny, encode("To be, or not"), 40, temperature=1.0, seed=7)))


def test_stream_never_splits_a_character():
    from gpt_mini.model import _stream_pieces
    text = "naïve 日本語 🙂🙃 café"
    enc = get_tokenizer()
    ids = encode(text)
    assert any("\ufffd" in decode([i]) for i in ids)  # some tokens are parts of a character on their own
    pieces = list(_stream_pieces(ids, enc))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # a byte sequence that never completes is flushed at the end, not lost
    tail = list(_stream_pieces([encode("a")[0], *[i for i in encode("🙂") if "\ufffd" in decode([i])][:1]], enc))
    assert "".join(tail).startswith("a") and "".join(tail).endswith("\ufffd")


# ---- values a NaN slips through, ids the tokenizer cannot decode (issue 15) ------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=NAN), "temperature"), (dict(temperature=INF), "temperature"), (dict(temperature=-INF), "temperature"),
    (dict(temperature="0.8"), "temperature"), (dict(temperature=None), "temperature"),
    (dict(top_p=NAN), "top_p"), (dict(top_p=INF), "top_p"), (dict(top_p=-INF), "top_p"),
    (dict(top_k=NAN), "top_k"), (dict(top_k=INF), "top_k"), (dict(top_k=2.5), "top_k"), (dict(top_k=True), "top_k"),
])
def test_non_finite_knobs_are_refused_everywhere(tiny, kwargs, match):
    "`temperature < 0` is False for NaN: every knob is checked for what a good value is, in every function that takes it."
    logits = torch.randn(1, 50)
    with pytest.raises(ValueError, match=match): sample_next(logits, **kwargs)
    with pytest.raises(ValueError, match=match): generate(tiny, [1, 2], 3, **kwargs)  # at call time
    with pytest.raises(ValueError, match=match): stream_text(tiny, "Hi", 3, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=NAN), "max_new_tokens"), (dict(max_new_tokens=INF), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(seed=2**64), "seed"), (dict(seed=NAN), "seed"), (dict(seed=1.5), "seed"), (dict(seed="7"), "seed"),
    (dict(vocab_limit=0), "vocab_limit"), (dict(vocab_limit=NAN), "vocab_limit"),
])
def test_generate_checks_counts_and_seeds_at_call_time(tiny, kwargs, match):
    args = dict(idx=[1, 2, 3], max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=match): generate(tiny, **args)  # before the first next(): nothing yielded


def test_the_largest_seed_works(tiny):
    assert len(list(generate(tiny, [1, 2], 3, seed=2**64 - 1))) == 3
    assert list(generate(tiny, [1, 2], 3, seed=5.0)) == list(generate(tiny, [1, 2], 3, seed=5))  # a whole float, as before


@pytest.mark.parametrize("knobs", [dict(temperature=0), dict(), dict(temperature=0.7), dict(top_k=5), dict(top_p=0.9),
                                   dict(top_k=5, top_p=0.5), dict(top_p=0.999)])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_logits_raise_instead_of_an_id_past_the_vocabulary(knobs, bad):
    logits = torch.randn(3, 600)
    logits[1, 7] = bad  # one bad row in a batch is enough
    with pytest.raises(NonFiniteLogitsError, match="the model produced (NaN|infinite) logits: its weights are not finite"):
        sample_next(logits, **knobs, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteLogitsError, match="the model produced NaN logits: its weights are not finite"):
        sample_next(torch.full((600,), NAN), **knobs)


def test_minus_inf_logits_are_fine():
    "A masked logit (-inf) is a legitimate zero probability, not a broken model."
    logits = torch.randn(4, 50)
    logits[:, 10:] = -INF
    for knobs in [dict(temperature=0), dict(), dict(top_k=3), dict(top_p=0.9)]:
        assert (sample_next(logits, **knobs, generator=torch.Generator().manual_seed(0)) < 10).all()


def nan_model(cfg=TINY):
    model = GPT(cfg).eval()
    with torch.no_grad(): model.lm_head.weight.fill_(NAN)  # tied: the embedding too, as in a diverged run
    return model


@pytest.mark.parametrize("knobs", [dict(temperature=0), dict(), dict(top_k=50), dict(top_p=0.9)])
def test_a_model_with_nan_weights_gets_a_clear_error(knobs):
    model = nan_model()
    tokens = generate(model, [1, 2, 3], 5, **knobs, seed=0)
    with pytest.raises(NonFiniteLogitsError, match="the model produced NaN logits: its weights are not finite"): next(tokens)
    with pytest.raises(NonFiniteLogitsError, match="NaN logits"): list(stream_text(model, "Hi", 5, **knobs, seed=0))


@pytest.mark.parametrize("idx, bad", [([1, 50257], "50257"), ([60000], "60000"), ([-1, 5], "-1"), ([[3, 2**40]], str(2**40))])
def test_prompt_ids_outside_the_vocabulary_are_a_value_error(tiny, idx, bad):
    with pytest.raises(ValueError, match=f"Token id {bad} .*valid ids are 0 to 50256"): generate(tiny, idx, 3)
    with pytest.raises(ValueError, match=f"Token id {bad}"): attention_maps(tiny, idx)
    assert len(list(generate(tiny, [0, 50256], 2))) == 2  # both ends of the range are fine


def padded_model(vocab_size=50304):
    "A model whose padding rows (ids the tokenizer has no text for) would win every step."
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=vocab_size)).eval()
    with torch.no_grad(): model.lm_head.weight[50257:] *= 100
    return model


@pytest.mark.parametrize("knobs", [dict(temperature=0), dict(temperature=1.0), dict(temperature=2.0, top_k=100),
                                   dict(top_k=100_000), dict(top_p=0.95), dict(top_k=60, top_p=0.99)])
def test_a_padded_vocabulary_never_samples_an_undecodable_id(knobs):
    model, n_vocab = padded_model(), get_tokenizer().n_vocab
    assert any(t >= n_vocab for t in generate(model, [1, 2, 3], 10, **knobs, seed=0))  # the hazard is real...
    ids = list(generate(model, [1, 2, 3], 10, **knobs, seed=0, vocab_limit=n_vocab))
    assert len(ids) == 10 and all(0 <= t < n_vocab for t in ids)                   # ...and the limit removes it
    text = "".join(stream_text(model, "ROMEO:", 10, **knobs, seed=0))              # no KeyError mid-stream
    assert isinstance(text, str) and text


def test_a_smaller_vocabulary_names_the_prompt_token_it_lacks():
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=1000)).eval()
    with pytest.raises(ValueError, match=r"'Hello' \(id 15496\) is outside the model's vocabulary: valid ids are 0 to 999"):
        stream_text(model, "Hello")
    text = "".join(stream_text(model, "!", 20, seed=0))  # "!" is id 0: the prompt fits, and every sampled id decodes
    assert isinstance(text, str)


def test_stream_pieces_names_an_id_it_cannot_decode():
    from gpt_mini.model import _stream_pieces
    with pytest.raises(ValueError, match="Token id 50300 cannot be decoded"): list(_stream_pieces([0, 50300], get_tokenizer()))


# ---- the attention explorer ---------------------------------------------------------------------------------------

def test_attention_maps_and_plot(tiny):
    import matplotlib; matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from gpt_mini.attention import plot_attention
    prompt = "First Citizen: Before we proceed"
    maps = attention_maps(tiny, prompt)
    T = len(encode(prompt))
    assert maps.shape == (TINY.n_layer, TINY.n_head, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(TINY.n_layer, TINY.n_head, T))
    assert maps.triu(1).abs().max() == 0
    assert torch.equal(maps, attention_maps(tiny, encode(prompt)))
    assert isinstance(plot_attention(maps[1, 0], [decode([i]) for i in encode(prompt)]), Figure)
    with torch.no_grad():  # the explicit path computes the same model
        h_weights, _ = tiny.hidden(torch.tensor([encode(prompt)]), need_weights=True)
        torch.testing.assert_close(h_weights, tiny.hidden(torch.tensor([encode(prompt)])), atol=1e-5, rtol=0)




def test_dropout_runs_at_every_site_in_training_and_is_skipped_when_idle(monkeypatch):
    # The residual, MLP and embedding dropouts are skipped when they would do nothing (eval mode, or p = 0: a module
    # call per layer and token saved); in training with p > 0 each of them must still run.
    calls = []
    real = torch.nn.Dropout.forward
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: calls.append(self.p) or real(self, x))
    x = torch.randint(0, 50257, (2, 8))
    for p, training, expected in [(0.1, True, 1 + 2 * 2), (0.1, False, 0), (0.0, True, 0)]:
        calls.clear()
        GPT(GPTConfig.from_preset("tiny", dropout=p)).train(training)(x)
        assert len(calls) == expected and all(c == p for c in calls), (p, training, calls)
    torch.manual_seed(0); model = GPT(GPTConfig.from_preset("tiny", dropout=0.5)).train()
    assert not torch.equal(model(x), model(x))  # random masks in training...
    model.eval(); assert torch.equal(model(x), model(x))  # ...none in eval
