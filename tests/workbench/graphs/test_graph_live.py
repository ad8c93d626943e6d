"""Live attribution (attribution patching in the real model) next to the graph's prediction."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import intervene, scale_neurons
from workbench.errors import WorkbenchError
from workbench.graphs import GraphConfig, GraphConfigError, build_graph, contrastive_graph, faithfulness
from workbench.graphs.live import live_gradients
from workbench.hooks import Site

from test_sae_basis import random_sae  # same folder (rootdir-relative import mode)

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

            def push(e):
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
    # one unit re-measured by hand at that factor
    u = g.nodes[g.node_index(f.node_ids[0])]
    tid = tiny.token_id(" Paris")
    with torch.no_grad():
        base = tiny.last_logits(PROMPT)[0, tid]
        with intervene(tiny, scale_neurons(u.layer, [u.index], 0.995, positions=[u.pos])):
            after = tiny.last_logits(PROMPT)[0, tid]
    assert float(f.measured[0]) == pytest.approx(float(after - base), abs=1e-5)


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
