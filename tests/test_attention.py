"Causal self-attention: hand-written vs fused, causality, the KV cache, the block."
import pytest
import torch
import torch.nn.functional as F

from gpt_mini.attention import CausalSelfAttention, KVCache, attention_by_hand, causal_mask, plot_attention
from gpt_mini.block import Block, LayerNorm, MLP


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 17, 16), (1, 12, 64, 64)])
def test_hand_written_matches_fused(shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape) for _ in range(3))
    out, w = attention_by_hand(q, k, v)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (out - fused).abs().max() <= 1e-5
    torch.testing.assert_close(w.sum(-1), torch.ones(shape[:-1]))
    assert w.masked_select(~causal_mask(shape[-2])).abs().max() == 0  # nothing above the diagonal


def test_layer_explicit_and_fused_paths_agree():
    torch.manual_seed(0)
    attn = CausalSelfAttention(64, 4).eval()
    x = torch.randn(3, 20, 64)
    with torch.no_grad():
        y_fused = attn(x)
        y_hand, w = attn(x, need_weights=True)
    assert w.shape == (3, 4, 20, 20)
    assert (y_fused - y_hand).abs().max() <= 1e-5


@pytest.mark.parametrize("module", [CausalSelfAttention(32, 4), Block(32, 4)])
def test_no_position_sees_the_future(module):
    torch.manual_seed(0)
    module.eval()
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        y = module(x)
        for t in range(1, 12):  # change position t: every output before it stays bit for bit the same
            x2 = x.clone(); x2[:, t] = torch.randn(2, 32) * 5
            y2 = module(x2)
            assert torch.equal(y2[:, :t], y[:, :t])
            assert not torch.allclose(y2[:, t], y[:, t])


def test_kv_cache_matches_full_sequence():
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 4).eval()
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        full = attn(x)
        cache = KVCache(16)
        pieces = [attn(x[:, :6], cache=cache)]                               # prefill
        pieces += [attn(x[:, t:t + 1], cache=cache) for t in range(6, 12)]  # one token at a time
        pieces.append(attn(x[:, 12:], cache=cache))                          # several after a cached prefix
    assert (torch.cat(pieces, 1) - full).abs().max() <= 1e-5
    assert cache.len == 16
    with pytest.raises(ValueError, match="overflow"):
        cache.append(cache.k[:, :, :1], cache.v[:, :, :1])
    cache.reset(); assert cache.len == 0


def test_block_pieces():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 24) * 3 + 1
    ln = LayerNorm(24)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (24,)))
    assert LayerNorm(24, bias=False).bias is None
    mlp = MLP(24)
    assert mlp.c_fc.out_features == 96
    torch.testing.assert_close(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh")))


def test_plot_attention():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    w = torch.softmax(torch.randn(5, 5).masked_fill(~causal_mask(5), float("-inf")), -1)
    fig = plot_attention(w, list("abcd") + ["\n"], title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]  # what is drawn is the matrix, with the tokens on both axes (a newline shown as \n) and the title
    assert (ax.images[0].get_array() == w.numpy()).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d", "\\n"] == [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_title() == "t" and ax.get_xlabel().startswith("key") and ax.get_ylabel().startswith("query")
    with pytest.raises(ValueError, match="tokens"): plot_attention(w, list("abc"))
    with pytest.raises(ValueError, match="matrix"): plot_attention(torch.zeros(2, 3))
