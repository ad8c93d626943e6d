"""Bad inputs, faithfulness, contrastive graphs, memory cards and graph diffs."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import Corpus, TokenError, harvest
from workbench.errors import ShapeError
from workbench.graphs import (
    GraphConfig,
    GraphConfigError,
    PromptTooLongError,
    UnknownBasisError,
    build_graph,
    contrastive_graph,
    faithfulness,
    freeze,
    graph_diff,
    memory_cards,
    predicted_effects,
    run,
)
from workbench.memory_cards import memory_card
from workbench.testing import tiny_session

PROMPT = "The Eiffel Tower is in the city of"


def test_bad_inputs_raise_one_clear_error_and_leave_the_session(tiny):
    before = tiny.last_logits(PROMPT)
    with pytest.raises(TokenError, match="' Paris is'.*2 tokens"):
        build_graph(tiny, PROMPT, target=" Paris is", progress=False)
    with pytest.raises(PromptTooLongError, match=r"context is 256 \(valid lengths 1..256\)"):
        build_graph(tiny, "the " * 300, progress=False)
    with pytest.raises(UnknownBasisError, match="basis='neurons' is unknown; valid bases are 'units', "
                                                "'transcoder', 'sae'"):
        build_graph(tiny, PROMPT, basis="neurons", progress=False)
    with pytest.raises(GraphConfigError, match=r"keep=1.5 is out of range; valid range is \(0, 1\]"):
        build_graph(tiny, PROMPT, keep=1.5, progress=False)
    with pytest.raises(ShapeError, match="same length"):
        contrastive_graph(tiny, PROMPT, "The Eiffel Tower", " Paris", " France", progress=False)
    assert torch.equal(tiny.last_logits(PROMPT), before)
    assert all(not hp._forward_hooks for hp in tiny.model.hook_dict.values())


def _ablate_frozen(fz, unit):
    """The frozen model with one unit's output removed, downstream units recomputed (gates fixed)."""
    lay, pos, idx = unit
    src = fz.coeffs.clone()
    for _ in range(fz.n_layers + 1):
        src[lay, pos, idx] = 0.0
        src = run(fz, sources=src).reads.clone()
    src[lay, pos, idx] = 0.0
    return run(fz, sources=src).logits


def test_graph_prediction_is_the_frozen_total_effect(tiny):
    """On a complete graph the path sum equals ablating the unit in the frozen model."""
    prompt = "The city of"
    fz = freeze(tiny, prompt)
    n_units = fz.n_layers * fz.n_pos * fz.weights.d_mlp
    g = build_graph(tiny, prompt, target=" Paris", max_nodes=n_units, keep=1.0, edge_keep=1.0,
                    faithfulness_nodes=0, progress=False)
    li = [n.label for n in g.nodes if n.kind == "logit"].index(" Paris")
    pred = predicted_effects(g, li)
    tid = tiny.token_id(" Paris")
    base = run(fz).logits[tid]
    for j, node in enumerate(g.nodes[:4]):
        assert node.kind == "unit"
        want = _ablate_frozen(fz, (node.layer, node.pos, node.index))[tid] - base
        # the graph keeps every unit with influence; dropped ones have no path to the logit
        assert float(-pred[j]) == pytest.approx(float(want), rel=2e-3, abs=1e-6)


def test_faithfulness_compares_with_real_ablations(tiny):
    g = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=0, progress=False)
    f = faithfulness(tiny, g, n=6, progress=False)
    assert len(f.measured) == len(f.predicted) == 6
    assert -1.0 <= f.spearman <= 1.0
    assert f.measured.abs().max() > 0          # ablations in the real model move the logit
    with torch.no_grad():  # one ablation re-measured independently
        from workbench import intervene, zero_neurons
        u = g.units()[0]
        base = tiny.last_logits(PROMPT)[0, tiny.token_id(" Paris")]
        with intervene(tiny, zero_neurons(u.layer, [u.index], positions=[u.pos])):
            after = tiny.last_logits(PROMPT)[0, tiny.token_id(" Paris")]
    assert float(f.measured[0]) == pytest.approx(float(after - base), abs=1e-5)
    # the frozen model's all-path prediction equals ablating in the frozen model
    fz = freeze(tiny, PROMPT)
    tid = tiny.token_id(" Paris")
    want = _ablate_frozen(fz, (u.layer, u.pos, u.index))[tid] - run(fz).logits[tid]
    assert float(f.predicted_frozen[0]) == pytest.approx(float(want), rel=2e-3, abs=1e-6)


def test_faithfulness_factor_scales_in_the_real_model(tiny):
    """build_graph's faithfulness_factor reaches the check: the first tested unit's measured
    change equals scaling it by that factor in the real model, and the prediction is the
    ablation's times (1 - factor)."""
    from workbench import intervene, scale_neurons

    g0 = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=3, progress=False)
    g = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=3,
                    faithfulness_factor=0.5, progress=False)
    f0 = faithfulness(tiny, g0, n=3, progress=False)
    f = faithfulness(tiny, g, n=3, factor=0.5, progress=False)
    torch.testing.assert_close(f.predicted, 0.5 * f0.predicted, rtol=1e-5, atol=1e-7)
    u = next(nd for nd in g.units() if nd.pos > 0)
    tid = tiny.token_id(" Paris")
    with torch.no_grad():
        base = tiny.last_logits(PROMPT)[0, tid]
        with intervene(tiny, scale_neurons(u.layer, [u.index], 0.5, positions=[u.pos])):
            after = tiny.last_logits(PROMPT)[0, tid]
    assert float(f.measured[0]) == pytest.approx(float(after - base), abs=1e-5)
    assert g.summary["faithfulness_spearman"] == pytest.approx(f.spearman, nan_ok=True)
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(GraphConfigError, match="faithfulness_factor"):
            GraphConfig(faithfulness_factor=bad)
    with pytest.raises(GraphConfigError, match="patches each unit to its corrupt value"):
        contrastive_graph(tiny, "When Mary and John went", "When John and Mary went", " Mary", " John",
                          faithfulness_factor=0.5, progress=False)


def test_contrastive_metric_row_is_the_attribution_patching_estimate(tiny):
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    assert len(tiny.encode(clean)) == len(tiny.encode(corrupt))
    g = contrastive_graph(tiny, clean, corrupt, " Mary", " John", max_nodes=100, faithfulness_nodes=4,
                          progress=False)
    s = g.summary
    fz, fc = freeze(tiny, clean), freeze(tiny, corrupt)
    # independent: the frozen clean model is linear, so the sum of direct effects of every
    # source's clean - corrupt difference is metric(clean) - metric(frozen-clean with corrupt sources)
    tid, fid = tiny.token_id(" Mary"), tiny.token_id(" John")
    lin = run(fz, embed=fc.embed, sources=fc.coeffs).logits
    want = (fz.logits[tid] - fz.logits[fid]) - (lin[tid] - lin[fid])
    assert s["metric_linear_estimate"] == pytest.approx(float(want), rel=1e-3, abs=1e-6)
    assert s["metric_clean"] == pytest.approx(float(fz.logits[tid] - fz.logits[fid]), abs=1e-5)
    assert not math.isnan(s["faithfulness_spearman"]) or s["units_kept"] < 3


def test_memory_cards(tiny, small_corpus_path):
    card = memory_card(tiny, 1, 7, coefficient=-2.0, k=5)
    assert [t.id for t in card.sub_update] == [t.id for t in card.suppressed]   # m < 0 flips the value
    assert memory_card(tiny, 1, 7, coefficient=3.0, k=5).sub_update[0].id == card.promoted[0].id
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    index = harvest(tiny, corpus, layers=[0, 1], k=4, window=32, progress=False)
    g = build_graph(tiny, PROMPT, max_nodes=60, faithfulness_nodes=0, progress=False)
    cards = memory_cards(tiny, g, index, corpus, k=3, limit=3)
    assert list(cards) == [n.id for n in g.units()[:3]]
    for nid, c in cards.items():
        assert c.triggers and c.triggers[0].coefficient == pytest.approx(
            float(index.values[index.row(c.layer), c.neuron, 0]))
        assert c.coefficient == g.nodes[g.node_index(nid)].activation


def test_graph_diff_after_a_weight_change(tok_dir):
    s = tiny_session("llama", tokenizer_dir=tok_dir, seed=1)
    g1 = build_graph(s, PROMPT, target=" Paris", max_nodes=120, faithfulness_nodes=0, progress=False)
    same = graph_diff(g1, g1)
    assert all(c.delta == 0 for c in same.nodes) and not same.gained and not same.lost
    top = g1.units()[0]
    from workbench.ffn import ffn_weights
    values = ffn_weights(s, top.layer).values
    with torch.no_grad():
        values[top.index] *= 4.0                # the caller's edit: a 4x stronger value
    g2 = build_graph(s, PROMPT, target=" Paris", max_nodes=120, faithfulness_nodes=0, progress=False)
    d = graph_diff(g1, g2)
    deltas = [abs(c.delta) for c in d.nodes]
    assert deltas == sorted(deltas, reverse=True)
    # the edited unit's outgoing edges grow (not exactly 4x: norms and gates downstream move)
    out_edges = [c for c in d.edges if c.source == top.id]
    assert out_edges
    assert sum(abs(c.after) for c in out_edges) > 2 * sum(abs(c.before) for c in out_edges)
    assert d.logits_before != d.logits_after
    with pytest.raises(ShapeError, match="different prompts"):
        graph_diff(g1, build_graph(s, "The city", max_nodes=10, faithfulness_nodes=0, progress=False))
