"The memorization measure: the longest common substring, right on random cases and fast on the whole corpus."
import time

import numpy as np
import torch

from gpt_mini.memorize import longest_common_substring


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


def test_longest_common_substring_is_fast_on_the_corpus(corpus):
    from gpt_mini.data import load_dataset
    train_ids = load_dataset(corpus).train
    sample = np.concatenate([np.arange(50_000, 50_100), train_ids[1000:1300], np.arange(50_000, 50_100)])
    t0 = time.perf_counter()
    n, i, j = longest_common_substring(sample, train_ids)
    assert n >= 300 and i == 100 and (train_ids[j:j + n] == sample[i:i + n]).all()
    assert time.perf_counter() - t0 < 5
    text = corpus.read_text()
    assert longest_common_substring(text[5000:5200], text)[0] == 200


# ---- CLI ---------------------------------------------------------------------------------------------------------------------
