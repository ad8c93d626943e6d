"""MoEfication: active-key shares vs brute force, expert output shares as exact identities."""

from __future__ import annotations

import pytest
import torch

from workbench import Corpus, capture
from workbench.capture import capture_tokens
from workbench.errors import ShapeError
from workbench.moe import (
    Experts,
    activation_sparsity,
    active_mask,
    cluster_experts,
    expert_shares,
    key_features,
    layer_coefficients,
)
from workbench.session import TokenBatch
from workbench.testing import tiny_session


@pytest.fixture(scope="module")
def corpus(tiny, small_corpus_path):
    return Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=4096)


def test_active_mask_definition():
    m = torch.tensor([[1.0, -0.5, 0.05, 0.0], [0.0, 0.0, -2.0, 0.3]])
    assert active_mask(m, 0.1).tolist() == [[True, True, False, False], [False, False, True, True]]
    with pytest.raises(ShapeError, match="threshold"):
        active_mask(m, 1.5)


def test_sparsity_equals_brute_force(tiny, corpus):
    sp = activation_sparsity(tiny, corpus, window=32, tokens_per_batch=512, max_tokens=1024)
    rows = []
    for wb in corpus.batches(tiny, window=32, tokens_per_batch=512, max_tokens=1024, progress=False):
        lengths = torch.full((len(wb.tokens),), wb.tokens.shape[1])
        cap = capture_tokens(tiny, TokenBatch(wb.tokens, lengths), ["mlp_post:0", "mlp_post:1"])
        rows.append([cap[f"mlp_post:{j}"][:, int(wb.bos):].reshape(-1, tiny.d_mlp) for j in (0, 1)])
    for j in (0, 1):
        m = torch.cat([r[j] for r in rows])
        a = (m.abs() > 0.1 * m.abs().amax(-1, keepdim=True)).double()
        assert sp.n_tokens == len(m)
        assert sp.mean_active[j] == pytest.approx(float(a.mean(-1).mean()), rel=1e-9)
        assert sp.std_active[j] == pytest.approx(float(a.mean(-1).std(unbiased=False)), rel=1e-6, abs=1e-9)
        torch.testing.assert_close(sp.key_frequency[j], a.mean(0).float())


def test_expert_parts_sum_to_ffn_output(tiny):
    ex = cluster_experts(tiny, 1, n_experts=5, n_init=1)
    assert sorted(set(ex.labels.tolist())) == list(range(5)) and sum(ex.sizes) == tiny.d_mlp
    cap = capture(tiny, "The quick brown fox jumps", ["mlp_post:1", "mlp_out:1"])
    m = cap["mlp_post:1"][0]
    sh = expert_shares(tiny, ex, m)
    assert float(sh.projection.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(sh.norm_share.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(sh.top_curve[-1]) == pytest.approx(1.0, abs=1e-5)
    assert bool((sh.top_curve[1:] >= sh.top_curve[:-1] - 1e-6).all())
    from workbench.moe import _parts

    parts = _parts(m.float(), tiny.model.blocks[1].mlp.W_out.float(), ex.labels, 5)
    torch.testing.assert_close(parts.sum(1), cap["mlp_out:1"][0].float(), atol=1e-5, rtol=1e-4)
    one = expert_shares(tiny, Experts(1, torch.zeros(tiny.d_mlp, dtype=torch.long), 1, "one"), m)
    assert one.top_curve.tolist() == pytest.approx([1.0])


def test_kmeans_recovers_planted_clusters(tok_dir):
    s = tiny_session("llama", tokenizer_dir=tok_dir, seed=3)
    mlp = s.hf_model.model.layers[0].mlp
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, s.d_model, generator=gen)
    truth = torch.arange(s.d_mlp) % 4
    with torch.no_grad():
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight.copy_(centres[truth] + 0.05 * torch.randn(s.d_mlp, s.d_model, generator=gen))
    assert key_features(s, 0).shape == (s.d_mlp, 2 * s.d_model)   # gate and up keys concatenated
    ex = cluster_experts(s, 0, n_experts=4, n_init=2)
    # same partition up to relabelling
    pairs = {(int(a), int(b)) for a, b in zip(ex.labels, truth)}
    assert len(pairs) == 4


def test_real_model_keys_are_sparse(smollm, small_corpus_path):
    c = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=512)
    sp = activation_sparsity(smollm, c, layers=[0, 3], window=64, max_tokens=256)
    assert all(0 < x < 0.3 for x in sp.mean_active)                 # few keys per token
    m = layer_coefficients(smollm, c, 3, max_tokens=128)
    assert m.shape == (128, smollm.d_mlp)


def test_moe_figures_show_the_results(tiny, corpus):
    from widgets.html.figures_vocab import expert_share_figure, sparsity_figure

    sp = activation_sparsity(tiny, corpus, window=32, tokens_per_batch=256, max_tokens=256)
    fig = sparsity_figure(sp.rows())
    assert list(fig.data[0].x) == [0, 1]
    assert list(fig.data[0].y) == pytest.approx(list(sp.mean_active), rel=1e-3)
    ex = cluster_experts(tiny, 0, n_experts=4, n_init=1)
    sh = expert_shares(tiny, ex, capture(tiny, "The quick brown fox", ["mlp_post:0"])["mlp_post:0"][0])
    fig = expert_share_figure(sh)
    assert list(fig.data[0].y) == pytest.approx(sh.top_curve.tolist(), rel=1e-3)
    assert list(fig.data[1].y) == pytest.approx(sh.top_curve_random.tolist(), rel=1e-3)
