"""MoEfication end to end: balanced experts, routers, the top-k intervention, sparse forward."""

from __future__ import annotations

import pytest
import torch

from workbench import Corpus, intervene
from workbench.errors import LayerOutOfRange, ShapeError
from workbench.moe import Experts
from workbench.moe_quality import fact_accuracy, perplexity, quality_curve, top_k_experts
from workbench.moe_routing import (
    balanced_experts,
    expert_norms,
    make_partitions,
    oracle_router,
    random_router,
    similarity_router,
    train_mlp_routers,
)
from workbench.moe_sparse import expert_ffn, time_sparse_ffn

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Paris is the capital of France"]


@pytest.fixture(scope="module")
def parts(tiny):
    return make_partitions(tiny, 8)


def test_balanced_experts_partition(tiny):
    ex = balanced_experts(tiny, 1, 8)
    assert ex.sizes == [32] * 8 and ex.labels.shape == (tiny.d_mlp,)
    assert sorted(ex.labels.unique().tolist()) == list(range(8))


def test_all_experts_is_the_unmodified_model(tiny, parts):
    base = tiny.logits(PROMPTS)
    for routers in ([similarity_router(tiny, p) for p in parts], [oracle_router(tiny, p) for p in parts]):
        with intervene(tiny, *top_k_experts(tiny, routers, 8)):
            assert torch.equal(tiny.logits(PROMPTS), base)
        with intervene(tiny, *top_k_experts(tiny, routers, 2)):
            assert not torch.allclose(tiny.logits(PROMPTS), base)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(tiny, *top_k_experts(tiny, [similarity_router(tiny, p) for p in parts], 1)):
            raise RuntimeError("boom")
    assert torch.equal(tiny.logits(PROMPTS), base)                          # undone, also on error


def test_top_k_keeps_exactly_the_chosen_experts(tiny, parts):
    """At k experts only units of the k best-scored experts carry nonzero coefficients."""
    from workbench import capture

    r = oracle_router(tiny, parts[0])
    full = capture(tiny, PROMPTS[0], ["mlp_post:0"])["mlp_post:0"][0]
    cut = capture(tiny, PROMPTS[0], ["mlp_post:0"], interventions=top_k_experts(tiny, [r], 3))["mlp_post:0"][0]
    norms = expert_norms(full, r.params["values"], parts[0])
    top = norms.topk(3, dim=-1).indices
    keep = torch.zeros_like(norms, dtype=torch.bool).scatter_(1, top, True)[:, parts[0].labels]
    assert torch.equal(cut != 0, keep & (full != 0))                       # exactly the chosen units
    assert torch.allclose(cut, torch.where(keep, full, torch.zeros(())), atol=1e-6)


def test_bad_k_and_layer(tiny, parts):
    routers = [similarity_router(tiny, p) for p in parts]
    for k in (0, 9, -1, 2.5):
        with pytest.raises(ShapeError, match=rf"k={k}.*1\.\.8"):
            top_k_experts(tiny, routers, k)
    bad = Experts(5, parts[0].labels, 8, "kmeans")
    with pytest.raises(LayerOutOfRange, match="layer=5.*0..1"):
        top_k_experts(tiny, [similarity_router(tiny, parts[0]).__class__(bad, "random")], 2)
    with pytest.raises(ShapeError, match="k=0"):
        time_sparse_ffn(tiny, routers[0], 0)


def test_sparse_forward_equals_masked_dense(tiny, parts):
    torch.manual_seed(0)
    x = torch.randn(20, tiny.d_model)
    ef = expert_ffn(tiny, parts[1])
    mlp = tiny.hf_model.model.layers[1].mlp
    with torch.no_grad():
        assert torch.allclose(ef.sparse(x, torch.arange(8).repeat(20, 1)), mlp(x), atol=1e-6)
        chosen = torch.stack([torch.randperm(8)[:3] for _ in range(20)])
        with pytest.raises(ShapeError, match="twice"):
            ef.sparse(x, torch.zeros(20, 2, dtype=torch.long))
        keep = torch.zeros(20, 8, dtype=torch.bool).scatter_(1, chosen, True)[:, parts[1].labels]
        h = mlp.act_fn(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
        assert torch.allclose(ef.sparse(x, chosen), (h * keep) @ mlp.down_proj.weight.T, atol=1e-6)
        # the grouped pass and the per-expert loop agree, also with experts no token chose
        for ch in (chosen, torch.zeros(20, 1, dtype=torch.long), torch.stack([torch.randperm(8)[:1] for _ in range(20)])):
            torch.testing.assert_close(ef.sparse(x, ch, grouped=True), ef.sparse(x, ch), atol=1e-6, rtol=1e-5)
        assert torch.equal(ef.sparse(x[:0], chosen[:0], grouped=True), torch.zeros(0, tiny.d_model))
    t = time_sparse_ffn(tiny, similarity_router(tiny, parts[1]), 2, n_tokens=64, repeats=2)
    assert t.dense_ms > 0 and t.sparse_ms > 0 and t.max_abs_diff < 1e-5


def test_trained_router_beats_random(tiny, parts, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    mlp = train_mlp_routers(tiny, corpus, parts[:1], steps=150, max_tokens=1024)[0]
    from workbench import capture

    held = small_corpus_path.read_text().splitlines()[-6:]                   # past the training tokens
    cap = capture(tiny, held, ["mlp_in:0", "mlp_post:0"])
    x, m = cap.flat("mlp_in:0"), cap.flat("mlp_post:0")
    truth = oracle_router(tiny, parts[0]).scores(x, m).topk(2, dim=-1).indices

    def overlap(scores):
        got = scores.topk(2, dim=-1).indices
        return (got[:, :, None] == truth[:, None, :]).any(-1).float().mean().item()

    assert overlap(mlp.scores(x)) > overlap(random_router(parts[0]).scores(x)) + 0.1


def test_quality_curve_mechanics(tiny, parts, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=600)
    qc = quality_curve(tiny, {"oracle": [oracle_router(tiny, p) for p in parts],
                              "random experts": [random_router(p) for p in parts]},
                       corpus, shares=(0.25, 1.0), facts=(PROMPTS, [" dog", " Paris"]), max_tokens=256)
    assert qc.ks == (2, 8) and qc.n_experts == 8 and qc.layers == (0, 1)
    for name in ("oracle", "random experts"):
        assert qc.perplexity[name][1] == qc.base_perplexity                 # k = all is exact
        assert qc.perplexity[name][0] != qc.base_perplexity
        assert len(qc.accuracy[name]) == 2
    assert qc.base_accuracy == fact_accuracy(tiny, PROMPTS, [" dog", " Paris"])
    assert qc.to_dict()["ks"] == [2, 8]


def test_expert_norms_match_direct_sum(tiny, parts):
    torch.manual_seed(1)
    m = torch.randn(5, tiny.d_mlp)
    values = tiny.hf_model.model.layers[0].mlp.down_proj.weight.T.detach()
    direct = torch.stack([(m[:, parts[0].labels == e] @ values[parts[0].labels == e]).norm(dim=-1)
                          for e in range(8)], -1)
    assert torch.allclose(expert_norms(m, values, parts[0]), direct, rtol=1e-4, atol=1e-6)


@pytest.mark.real
def test_real_model_top_k(smollm, small_corpus_path):
    """k = all is exact on the real model; the oracle beats random experts at a quarter."""
    layers = [0, 6, 12, 18, 24, 29]
    parts = make_partitions(smollm, 16, layers=layers, kind="random")       # no clustering: fast
    base = smollm.logits(PROMPTS[1])
    with intervene(smollm, *top_k_experts(smollm, [similarity_router(smollm, p) for p in parts], 16)):
        assert torch.equal(smollm.logits(PROMPTS[1]), base)
    corpus = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=300)
    oracle = top_k_experts(smollm, [oracle_router(smollm, p) for p in parts], 4)
    rand = top_k_experts(smollm, [random_router(p) for p in parts], 4)
    assert perplexity(smollm, corpus, oracle, max_tokens=128) < perplexity(smollm, corpus, rand, max_tokens=128)
    assert torch.equal(smollm.logits(PROMPTS[1]), base)
