"""Pruning, influence, scores and the result object."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.graphs import SUMMARY_KEYS, build_graph, influence, normalized, prune, scores


def _toy():
    # order: u0 u1 u2 | t0 | l0 ; rows are targets
    A = torch.zeros(5, 5)
    A[4, 2], A[4, 1] = 3.0, -1.0        # logit <- u2, u1
    A[2, 0], A[2, 3] = 2.0, 1.0         # u2 <- u0, t0
    A[1, 3] = 1.0                       # u1 <- t0
    A[0, 3] = -4.0                      # u0 <- t0
    total = A.abs().sum(1)
    total[4] += 4.0                     # the logit also gets input from sources outside the graph
    return A, total


def test_influence_is_the_path_sum():
    A, total = _toy()
    N = normalized(A, total)
    w = torch.tensor([0, 0, 0, 0, 1.0])
    want = w @ (torch.linalg.inv(torch.eye(5) - N) - torch.eye(5))
    assert torch.allclose(influence(N, w), want, atol=1e-6)
    assert influence(N, w)[2] == pytest.approx(3 / 8)


def test_prune_keeps_the_smallest_set_reaching_the_share():
    A, total = _toy()
    w = torch.tensor([0, 0, 0, 0, 1.0])
    inf = influence(normalized(A, total), w)     # u2 = 3/8, u0 = 3/8 * 2/3 = 1/4, u1 = 1/8
    assert inf[:3].tolist() == pytest.approx([0.25, 0.125, 0.375])
    pr = prune(A, total, w, n_units=3, n_tokens=1, keep=0.8, edge_keep=1.0)
    assert pr.node_mask.tolist() == [True, False, True, True, True]   # u2 + u0 = 0.625 of 0.75
    assert pr.node_share == pytest.approx(0.625 / 0.75)
    assert not pr.edge_mask[:, 1].any() and not pr.edge_mask[1].any()
    # everything kept: completeness counts only input from outside the graph as missing
    c_all, rep = scores(A, total, w, torch.ones(5, dtype=torch.bool), 3, 0, 1)
    out = influence(normalized(A, total), w) + w
    frac = torch.where(total > 0, A.abs().sum(1) / total, torch.ones(5))  # token rows have no inputs
    assert c_all == pytest.approx(float((frac * out).sum() / out.sum()), rel=1e-6)
    assert rep is None
    c_kept, _ = scores(A, total, w, pr.node_mask, 3, 0, 1)
    assert c_kept < c_all


def test_graph_keeps_what_it_says(tiny):
    g = build_graph(tiny, "The Eiffel Tower is in the city of", keep=0.6, edge_keep=1.0, max_nodes=150,
                    faithfulness_nodes=0, progress=False)
    s = g.summary
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["node_share"] >= 0.6 - 1e-6
    units = g.units()
    assert s["units_kept"] == len(units) and s["nodes"] == len(g.nodes) and s["edges"] == len(g.weights)
    infl = [u.influence for u in units]
    assert infl == sorted(infl, reverse=True)
    n = len(g.nodes)
    assert g.edges.max() < n and g.adjacency.shape == (n, n)
    for j, u in enumerate(g.nodes):         # every kept unit has a kept edge in and out
        if u.kind == "unit":
            assert (g.edges[:, 1] == j).any() and (g.edges[:, 0] == j).any()
    # edge weights are the adjacency entries
    assert torch.equal(g.weights, g.adjacency[g.edges[:, 1], g.edges[:, 0]])
    d = json.loads(json.dumps(g.to_dict()))
    assert len(d["nodes"]) == n and d["summary"]["nodes"] == n
    assert {e["source"] for e in d["edges"]} <= {nd["id"] for nd in d["nodes"]}
