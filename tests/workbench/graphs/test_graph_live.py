"""Live attribution (attribution patching in the real model) next to the graph's prediction."""

from __future__ import annotations

import math

import pytest
import torch
from test_sae_basis import random_sae  # same folder (rootdir-relative import mode)

from workbench.errors import WorkbenchError
from workbench.graphs import (
    GraphConfig,
    GraphConfigError,
    build_graph,
    contrastive_graph,
    faithfulness,
)
from workbench.graphs.live import live_gradients
from workbench.hooks import Site

PROMPT = "The Eiffel Tower is in the city of"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def _metric(s, ids, tid, fid, hooks=()):
    with torch.no_grad(), s.hooks(list(hooks)):
        lg = s.model(torch.tensor([ids]), return_type="logits")[0, -1].double()
    return float(lg[tid] - (lg[fid] if fid is not None else 0.0))


@pytest.mark.parametrize("kind", ["mlp_post", "resid_post"])
def test_live_gradients_equal_finite_differences(tiny, kind):
    """dM/dx at a site equals the central difference of the real model's metric along a unit
    direction there (nothing frozen), for the target logit and for a logit difference."""
    ids = tiny.encode(CLEAN)
    tid, fid = tiny.token_id(" Mary"), tiny.token_id(" John")
    st = Site(kind, 1)
    before = tiny.last_logits(CLEAN)
    for foil in (None, fid):
        g = live_gradients(tiny, ids, tid, foil, [st])[st]
        assert g.shape == (len(ids), st.width(tiny))
        for pos, idx in ((len(ids) - 1, int(g[-1].abs().argmax())), (3, int(g[3].abs().argmax()))):
            eps = 1e-2

            def push(e, pos=pos, idx=idx):
                def fn(act, hook=None):
                    out = act.clone()
                    out[0, pos, idx] += e
                    return out
                return [(st.hook_name, fn)]

            fd = (_metric(tiny, ids, tid, foil, push(eps)) - _metric(tiny, ids, tid, foil, push(-eps))) / (2 * eps)
            assert float(g[pos, idx]) == pytest.approx(fd, rel=2e-2, abs=1e-4)
    assert torch.equal(tiny.last_logits(CLEAN), before)          # the model is left as found
    assert all(not hp._forward_hooks for hp in tiny.model.hook_dict.values())


def test_live_prediction_is_first_order_in_the_real_model(tiny):
    """Scaling each tested unit by 0.995 in the real model changes the logit by its live
    prediction (the first-order term) to within a few percent; the graph's frozen prediction
    need not match."""
    g = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=0, progress=False)
    f = faithfulness(tiny, g, n=5, factor=0.995, progress=False)
    assert f.predicted_live is not None and len(f.predicted_live) == len(f.measured) == 5
    scale = float(f.measured.abs().max())
    assert scale > 0
    torch.testing.assert_close(f.predicted_live, f.measured, rtol=5e-2, atol=5e-2 * scale)
    # (that `measured` is the real model's change at the factor: test_graph_api)


def test_live_prediction_of_sae_features(tiny):
    saes = {1: random_sae(tiny, 1, "topk", seed=8)}
    g = build_graph(tiny, PROMPT, basis="sae", saes=saes, max_nodes=30, faithfulness_nodes=0, progress=False)
    f = faithfulness(tiny, g, 3, factor=0.995, saes=saes, progress=False)
    assert len(f.node_ids) >= 2
    scale = float(f.measured.abs().max())
    torch.testing.assert_close(f.predicted_live, f.measured, rtol=5e-2, atol=5e-2 * scale)


def test_summary_reports_both_and_the_mode_default(tiny):
    g = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=4, progress=False)
    s = g.summary
    assert s["faithfulness_prediction"] == "graph"
    assert s["faithfulness_spearman"] == pytest.approx(s["faithfulness_spearman_graph"], nan_ok=True)
    assert "faithfulness_spearman_live" in s
    gl = build_graph(tiny, PROMPT, target=" Paris", max_nodes=200, faithfulness_nodes=4, prediction="live",
                     progress=False)
    assert gl.summary["faithfulness_prediction"] == "live"
    assert gl.summary["faithfulness_spearman"] == pytest.approx(gl.summary["faithfulness_spearman_live"],
                                                                nan_ok=True)
    c = contrastive_graph(tiny, CLEAN, CORRUPT, " Mary", " John", max_nodes=100, faithfulness_nodes=5,
                          progress=False)
    cs = c.summary
    assert cs["faithfulness_prediction"] == "live"
    assert cs["faithfulness_spearman"] == pytest.approx(cs["faithfulness_spearman_live"], nan_ok=True)
    assert not math.isnan(cs["faithfulness_spearman_live"]) or cs["units_kept"] < 3
    effects = [abs(h["patch_effect"]) for h in cs["heads"]]             # the circuit's heads
    assert len(effects) == min(10, tiny.n_layers * tiny.n_heads) and effects == sorted(effects, reverse=True)


def test_contrastive_live_prediction_is_first_order(tiny):
    """Patching a unit to its corrupt value moves the metric by about its live prediction when
    the patch is small; checked on the units whose clean - corrupt difference is smallest."""
    from workbench.graphs import contrastive_faithfulness, freeze

    c = contrastive_graph(tiny, CLEAN, CORRUPT, " Mary", " John", max_nodes=200, faithfulness_nodes=0,
                          progress=False)
    fc = freeze(tiny, CORRUPT)
    f = contrastive_faithfulness(tiny, c, fc.coeffs, tiny.token_id(" Mary"), tiny.token_id(" John"), n=40,
                                 progress=False)
    acts = torch.tensor([abs(c.nodes[c.node_index(i)].activation) for i in f.node_ids])
    small = acts.argsort()[:5]
    m, p = f.measured[small], f.predicted_live[small]
    torch.testing.assert_close(p, m, rtol=0.1, atol=0.1 * float(m.abs().max()) + 1e-6)


def test_bad_prediction_raises(tiny):
    with pytest.raises(GraphConfigError, match="prediction='exact' is unknown; valid: 'graph', 'live'"):
        GraphConfig(prediction="exact")
    with pytest.raises(WorkbenchError, match="site attn_pattern:0 is not supported"):
        live_gradients(tiny, tiny.encode(PROMPT), 5, None, [Site("attn_pattern", 0)])
    with pytest.raises(WorkbenchError, match=r"target=100000 is out of range"):
        live_gradients(tiny, tiny.encode(PROMPT), 100000, None, [Site("mlp_post", 0)])


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_fully_frozen_live_gradient_is_the_graphs_frozen_derivative(name, request):
    """With attention, norms and gates held in the real model's backward, dM/dm equals the frozen
    model's all-path derivative (`total_ffn_gradients` through W_down): the two are one model."""
    from workbench.graphs import freeze
    from workbench.graphs.edges import total_ffn_gradients
    from workbench.graphs.live import FROZEN_PARTS

    s = request.getfixturevalue(name)
    ids = s.encode(PROMPT)
    tid = s.token_id(" Paris")
    fz = freeze(s, ids)
    g_f = total_ffn_gradients(fz, fz.weights.W_U[tid])
    want = torch.stack([g_f[i] @ fz.weights.layers[i].W_down for i in range(fz.n_layers)])
    sites = [Site("mlp_post", i) for i in range(s.n_layers)]
    got = live_gradients(s, ids, tid, None, sites, frozen=FROZEN_PARTS)
    got = torch.stack([got[st] for st in sites])
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-3, atol=1e-4 * scale)
    live = torch.stack([v for v in live_gradients(s, ids, tid, None, sites).values()])
    assert float((live - got).abs().max()) > 1e-3 * scale        # freezing does change the gradient
    with pytest.raises(WorkbenchError, match="frozen parts \\['heads'\\] are unknown"):
        live_gradients(s, ids, tid, None, sites, frozen=("heads",))


def test_head_attribution_is_first_order_and_scores_against_patching(tiny):
    """A head's estimate equals the real change of M when its z moves a small step eps of the way
    from clean to corrupt, divided by eps (first order); compare_heads counts overlaps."""
    from workbench.graphs.heads import compare_heads, head_effects, top_heads

    ids_c = tiny.encode(CLEAN)
    tid, fid = tiny.token_id(" Mary"), tiny.token_id(" John")
    est, m_c, m_x = head_effects(tiny, CLEAN, CORRUPT, [tid], [fid])
    assert est.shape == (tiny.n_layers, tiny.n_heads)
    z = {}
    for text in (CLEAN, CORRUPT):
        cap: list = []
        with torch.no_grad(), tiny.hooks([("blocks.1.attn.hook_z", lambda a, hook=None, cap=cap: cap.append(a.detach()))]):
            tiny.model(torch.tensor([tiny.encode(text)]), return_type="logits")
        z[text] = cap[0]
    layer, head = 1, int(est[1].abs().argmax())
    eps = 1e-3

    def step(act, hook=None):
        out = act.clone()
        out[:, :, head] = z[CLEAN][:, :, head] + eps * (z[CORRUPT][:, :, head] - z[CLEAN][:, :, head])
        return out

    moved = _metric(tiny, ids_c, tid, fid, [("blocks.1.attn.hook_z", step)])
    assert (moved - m_c) / eps == pytest.approx(float(est[layer, head]), rel=2e-2, abs=1e-3)
    truth = torch.zeros(tiny.n_layers, tiny.n_heads)
    truth[0, 1], truth[1, 2] = 3.0, -2.0
    scores = truth.clone()
    scores[1, 0] = 5.0
    assert top_heads(scores, 2) == ((1, 0), (0, 1))
    c = compare_heads(scores, truth, k=2)
    assert c.precision == c.recall == 0.5 and c.true == ((0, 1), (1, 2))
    with pytest.raises(WorkbenchError, match="k=0 is out of range"):
        compare_heads(scores, truth, k=0)


def test_weighted_target_is_the_weighted_sum_of_gradients(tiny):
    """A {token: weight} target gives the same gradient as the weighted sum of one-token ones."""
    ids = tiny.encode(CLEAN)
    a, b, c = tiny.token_id(" Mary"), tiny.token_id(" John"), tiny.token_id(" the")
    st = [Site("attn_z", 1), Site("mlp_post", 0)]
    got = live_gradients(tiny, ids, {a: 0.5, b: 0.5, c: -1.0}, None, st)
    ga, gb, gc = (live_gradients(tiny, ids, t, None, st) for t in (a, b, c))
    for s in st:
        torch.testing.assert_close(got[s], 0.5 * ga[s] + 0.5 * gb[s] - gc[s], rtol=1e-4, atol=1e-6)
    assert got[st[0]].shape == (len(ids), tiny.n_heads, tiny.d_head)
    with pytest.raises(WorkbenchError, match="empty mapping"):
        live_gradients(tiny, ids, {}, None, st)


def test_live_pass_returns_the_real_activations_and_logits(tiny):
    from workbench.graphs.live import live_pass

    ids = tiny.encode(CLEAN)
    st = [Site("attn_z", 1), Site("resid_post", 0)]
    lp = live_pass(tiny, ids, tiny.token_id(" Mary"), None, st)
    cap = {}
    with torch.no_grad(), tiny.hooks([(s.hook_name, lambda a, hook=None, s=s: cap.__setitem__(s, a.detach()[0]))
                                      for s in st]):
        want = tiny.model(torch.tensor([ids]), return_type="logits")[0, -1].float()
    for s in st:
        assert torch.equal(lp.values[s], cap[s])
    torch.testing.assert_close(lp.logits, want, rtol=0, atol=1e-5)


def test_live_prediction_of_transcoder_latents(tiny):
    """A latent's live prediction (gradient at mlp_out . its decoder row) is first-order in the
    real model, where faithfulness takes the latent's own write out of the FFN output."""
    from test_graph_transcoder_basis import random_transcoder

    tcs = {0: random_transcoder(tiny, 0, seed=3)}
    g = build_graph(tiny, PROMPT, basis="transcoder", transcoders=tcs, other_layers="errors", max_nodes=40,
                    faithfulness_nodes=0, progress=False)
    f = faithfulness(tiny, g, 3, factor=0.995, transcoders=tcs, progress=False)
    assert any(i.startswith("f") for i in f.node_ids), "expected latents among the tested nodes"
    scale = float(f.measured.abs().max())
    assert scale > 0
    torch.testing.assert_close(f.predicted_live, f.measured, rtol=5e-2, atol=5e-2 * scale)


def test_head_importance_normalises_like_head_patching(tiny):
    """head_importance's logit differences are the ground truth's (saes.circuits, batched, an
    independent computation of M), and each estimate is minus the pairs' mean head_effects over
    M_clean - M_corrupt, live and frozen."""
    from workbench.graphs.heads import head_effects, head_importance
    from workbench.graphs.live import FROZEN_PARTS
    from workbench.saes.circuits import head_patching_importance
    from workbench.saes.tasks import CircuitTask

    m, j, p = (tiny.token_id(t) for t in (" Mary", " John", " Paris"))
    task = CircuitTask("ioi", (CLEAN, CLEAN.replace("John gave", "Paris gave")),
                       (CORRUPT, CORRUPT.replace("Mary gave", "Paris gave")), ((m,), (m, p)), ((j,), (j,)))
    hi = head_importance(tiny, task, progress=False)
    _, ld_c, ld_x = head_patching_importance(tiny, task, progress=False)
    assert hi.ld_clean == pytest.approx(ld_c, abs=1e-4) and hi.ld_corrupt == pytest.approx(ld_x, abs=1e-4)
    for got, frozen in ((hi.live, ()), (hi.frozen, FROZEN_PARTS)):
        eff = [head_effects(tiny, c, x, cc, w, frozen)[0] for c, x, cc, w in
               zip(task.clean, task.corrupt, task.correct, task.wrong)]
        want = -torch.stack(eff).mean(0) / (ld_c - ld_x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(hi.live, hi.frozen)
