import urllib.request
import numpy as np
import pytest, torch
from gpt_mini.data import (Batches, DataError, decode, download_tiny_shakespeare, encode, find_text, load_dataset,
                           read_text, split_ids, tokenize_cached, DATA_ENV)

TINY_SHAKESPEARE_TOKENS = 338_025

def test_tokenizer_round_trip():
    for s in ["First Citizen:\nBefore we proceed any further, hear me speak.", "naïve café 日本語 🙂 <|endoftext|>", ""]:
        assert decode(encode(s)) == s
    assert decode(torch.tensor(encode("tensor input"))) == "tensor input"

def test_tiny_shakespeare_token_count(corpus, cache):
    data = load_dataset(corpus)
    assert data.n_tokens == TINY_SHAKESPEARE_TOKENS
    assert len(data.val) == round(TINY_SHAKESPEARE_TOKENS * 0.1)
    assert data.train.dtype == np.uint16

def test_token_cache_is_used_and_keyed_by_content(tmp_path, cache, monkeypatch):
    text = "Some words to tokenize, repeated. " * 200
    ids = tokenize_cached(text)
    assert len(list((cache/"tokens").glob("*.npy"))) == 1
    calls = []
    import gpt_mini.data as d
    monkeypatch.setattr(d, "encode", lambda t: calls.append(t) or encode(t))
    assert tokenize_cached(text).tolist() == ids.tolist() and calls == []   # second load: from the cache
    tokenize_cached(text + " changed")                                      # a changed text is tokenized again
    assert len(calls) == 1 and len(list((cache/"tokens").glob("*.npy"))) == 2

def test_find_text_order(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    explicit, env = tmp_path/"explicit.txt", tmp_path/"env.txt"
    explicit.write_text("explicit"); env.write_text("env")
    monkeypatch.setenv(DATA_ENV, str(env))
    assert find_text(explicit) == explicit
    assert find_text() == env
    (tmp_path/"input.txt").write_text("the recipe's convention")
    assert find_text().name == "input.txt"
    (tmp_path/"input.txt").unlink(); monkeypatch.delenv(DATA_ENV)
    cache.mkdir(parents=True, exist_ok=True); (cache/"tinyshakespeare.txt").write_text("cached download")
    assert find_text() == cache/"tinyshakespeare.txt"

def test_offline_without_text_says_how_to_provide_it(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path); monkeypatch.delenv(DATA_ENV, raising=False)
    def offline(*a, **k): raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"--data FILE.*input\.txt.*GPT_MINI_DATA"): find_text()
    assert not (cache/"tinyshakespeare.txt").exists() and not list(cache.glob("*.part"))

def test_download_is_cached(tmp_path, cache, monkeypatch):
    class Resp:
        def __enter__(self): return self
        def __exit__(self, *a): pass
        def read(self): return b"downloaded text"
    n = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: n.append(1) or Resp())
    p1 = download_tiny_shakespeare(); p2 = download_tiny_shakespeare()
    assert p1 == p2 and p1.read_text() == "downloaded text" and len(n) == 1

@pytest.mark.parametrize("content,match", [(b"", "empty"), (b" \n\t\n", "empty"), (b"\x7fELF\x00\x01\x02", "binary"),
                                           ("caf\xe9 cr\xe8me".encode("latin1"), "UTF-8")])
def test_bad_files(tmp_path, content, match):
    p = tmp_path/"bad.txt"; p.write_bytes(content)
    with pytest.raises(DataError, match=match): read_text(p)

def test_unreadable_file_is_named(tmp_path, monkeypatch):
    "EACCES (a file without read permission; root reads anything, so the refusal is simulated) is a DataError naming it."
    p = tmp_path/"locked.txt"; p.write_text("To be.")
    real = type(p).read_bytes
    def refuse(self):
        if self.name == "locked.txt": raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(type(p), "read_bytes", refuse)
    with pytest.raises(DataError, match=r"Cannot read .*locked.txt: Permission denied"): read_text(p)

def test_missing_file_and_bad_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="not found"): find_text(tmp_path/"nope.txt")
    monkeypatch.setenv(DATA_ENV, str(tmp_path/"nope.txt"))
    with pytest.raises(DataError, match="GPT_MINI_DATA"): find_text()

def test_text_shorter_than_a_window(tmp_path, cache):
    p = tmp_path/"short.txt"; p.write_text("Only a few tokens here.")
    data = load_dataset(p, val_frac=0)
    with pytest.raises(DataError, match="one training window needs"): Batches(data.train, 2, 64)

def test_split():
    train, val = split_ids(np.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    assert len(split_ids(np.arange(100), 0.0)[1]) == 0
    with pytest.raises(ValueError): split_ids(np.arange(10), 1.0)

@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_batches_shift_bounds_and_seed(mode):
    ids = np.arange(1000, dtype=np.uint16)  # id == position, so windows are easy to check
    a, b = Batches(ids, 4, 32, mode=mode, seed=3), Batches(ids, 4, 32, mode=mode, seed=3)
    for _ in range(50):
        x, y = next(a); x2, y2 = next(b)
        assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(y, x + 1)                     # y is x shifted by one (ids are positions)
        assert int(y.max()) < 1000                       # no window runs past the end

def test_sequential_walks_in_order_and_wraps():
    ids = np.arange(50, dtype=np.uint16)
    b = Batches(ids, 2, 10, mode="sequential")
    starts = [int(x[i, 0]) for _ in range(4) for x, _ in [next(b)] for i in range(2)]
    assert starts == [0, 10, 20, 30, 0, 10, 20, 30]      # 40 + 1 fits, 50 + 1 does not: wrap

def test_batches_resume_exactly():
    ids = np.random.default_rng(0).integers(0, 50257, 5000).astype(np.uint16)
    for mode in ("random", "sequential"):
        a = Batches(ids, 3, 16, mode=mode, seed=7)
        for _ in range(5): next(a)
        state = a.state_dict(); expected = [next(a)[0] for _ in range(3)]
        b = Batches(ids, 3, 16, mode=mode, seed=999); b.load_state_dict(state)
        assert all(torch.equal(e, next(b)[0]) for e in expected)

def test_ranks_partition_the_stream():
    ids = np.arange(2000, dtype=np.uint16)
    whole = next(Batches(ids, 4, 8, mode="sequential"))[0]
    parts = [next(Batches(ids, 2, 8, mode="sequential", rank=r, world_size=2))[0] for r in range(2)]
    assert sorted(map(tuple, whole.tolist())) == sorted(map(tuple, torch.cat(parts).tolist()))

def test_bad_batch_args():
    with pytest.raises(ValueError, match="mode"): Batches(np.arange(100), 2, 8, mode="shuffled")
    with pytest.raises(ValueError, match="≥ 1"): Batches(np.arange(100), 0, 8)
