"""What a trained model learned (chapter 08): the longest common substring, right on random cases and fast on the
whole corpus; and the attention explorer."""

import numpy as np
import torch

import pytest

from gpt_mini.data import decode, encode
from gpt_mini.memorize import attention_explorer, explore_attention, longest_common_substring
from gpt_mini.model import GPT, GPTConfig

TINY = GPTConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(TINY).eval()


def _brute(a, b):
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]: k += 1
            best = max(best, k)
    return best


def test_longest_common_substring_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(300):
        a, b = rng.integers(0, 4, rng.integers(0, 25)), rng.integers(0, 4, rng.integers(0, 25))
        n, i, j = longest_common_substring(a, b)
        assert n == _brute(list(a), list(b))
        assert list(a[i:i + n]) == list(b[j:j + n])
    assert longest_common_substring("to be or not to be", "not to bed") == (9, 9, 0)
    assert longest_common_substring(torch.tensor([5, 6, 7]), [1, 6, 7, 2]) == (2, 1, 1)


def test_longest_common_substring_hashes_each_sequence_a_logarithmic_number_of_times(corpus, monkeypatch):
    # Not a timing (the machine is noisy): the search is fast because it hashes both sequences once per length it
    # tries, and a binary search tries ~log2(len) lengths. A scan of every length, or of every pair, would fail here.
    import math
    from gpt_mini import memorize
    from gpt_mini.data import load_dataset
    train_ids = load_dataset(corpus).train
    sample = np.concatenate([np.arange(50_000, 50_100), train_ids[1000:1300], np.arange(50_000, 50_100)])
    calls, real = [], memorize._window_hashes
    monkeypatch.setattr(memorize, "_window_hashes", lambda x, L, *a: calls.append(len(x)) or real(x, L, *a))
    n, i, j = longest_common_substring(sample, train_ids)
    assert n >= 300 and i == 100 and (train_ids[j:j + n] == sample[i:i + n]).all()
    assert 0 < len(calls) <= 2 * (math.ceil(math.log2(len(sample))) + 1)  # two sequences per length tried
    text = corpus.read_text()
    assert longest_common_substring(text[5000:5200], text)[0] == 200


# ---- the attention explorer (moved here from chapter 03 with its code) ----------------------------------------------

def test_attention_explorer_logic(tiny):
    import matplotlib; matplotlib.use("Agg")
    prompt = "First Citizen: Before we proceed"
    fig, summary = explore_attention(tiny, prompt, layer=1, head=1)
    T = len(encode(prompt))
    assert fig.axes[0].get_title() == "layer 1, head 1"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [repr(decode([i]))[1:-1] for i in encode(prompt)]
    assert summary.startswith(f"{T} tokens · mean look-back")
    for bad, fragment in [(dict(prompt=" \n"), "prompt is empty"), (dict(layer=TINY.n_layer), "layer must be between"),
                          (dict(head=-1), "head must be between")]:
        with pytest.raises(ValueError, match=fragment):
            explore_attention(tiny, **{"prompt": prompt, "layer": 0, "head": 0, **bad})
    long = "to be or not to be " * 100  # longer than the context: the last block_size tokens
    fig, summary = explore_attention(tiny, long)
    assert summary.startswith(f"{TINY.block_size} tokens")


def test_attention_explorer_widget_redraws(tiny):
    import matplotlib; matplotlib.use("Agg")
    box = attention_explorer(tiny, "to be or not")
    prompt, layer, head, summary, out = box.children
    assert (layer.min, layer.max, list(head.options)) == (0, TINY.n_layer - 1, list(range(TINY.n_head)))
    first = summary.value
    layer.value, head.value = 1, 1
    assert first.startswith("4 tokens") and summary.value.startswith("4 tokens") and summary.value != first
    prompt.value = "to be or not to be, that is the question"
    assert summary.value.startswith(f"{len(encode(prompt.value))} tokens")
    prompt.value = ""
    assert summary.value == "The prompt is empty: type a few words to look at."
