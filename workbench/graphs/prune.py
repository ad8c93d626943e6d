"""Influence, pruning and the graph scores (after circuit-tracer's definitions, our own code).

With A [n n] the direct edges (rows targets, columns sources) and T [n] each row's absolute
total over ALL its sources (also those left out of the graph), the normalised adjacency is

    N[t, s] = |A[t, s]| / T[t]          (rows sum to <= 1; the rest is input from outside)

and the influence of every node on the chosen logits (weights w on the logit rows) is the sum
over paths of any length, I = w N + w N^2 + ... (the graph is a DAG, so the series ends).

Pruning keeps the smallest set of units whose influence reaches `keep` of all units' influence
(tokens and logits always stay), then, among kept nodes, the edges whose score
N[t, s] (I[t] + w[t]) reaches `edge_keep` of the total, then drops units left without an
incoming or outgoing kept edge (repeated until stable).

Scores on the kept graph (circuit-tracer's `compute_graph_scores`, with nodes outside the graph
counted like error nodes):
    completeness = sum_t f_t (I_t + w_t) / sum_t (I_t + w_t),  f_t = 1 - (share of row t's
                   input from error nodes and from nodes not kept)
    replacement  = I(tokens) / (I(tokens) + I(error nodes))   (bases with error nodes only)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._types import Bool, Float, Tensor

__all__ = ["normalized", "influence", "PruneResult", "prune", "scores"]


def normalized(A: Float[Tensor, "n n"], total_abs: Float[Tensor, " n"]) -> Float[Tensor, "n n"]:
    """N = |A| / T row-wise (rows with T = 0, the token rows, stay zero)."""
    return A.abs() / total_abs.clamp_min(1e-30)[:, None]


def influence(N: Float[Tensor, "n n"], w: Float[Tensor, " n"], max_iter: int = 10_000) -> Float[Tensor, " n"]:
    """I = w N + w N^2 + ... (path sum on a DAG; raises if it does not end)."""
    cur = w @ N
    out = cur.clone()
    for _ in range(max_iter):
        cur = cur @ N
        if not bool((cur > 0).any()):
            return out
        out += cur
    raise RuntimeError(f"influence did not converge in {max_iter} steps; the graph has a cycle")


def _threshold(scores: Tensor, share: float) -> float:
    s = scores.flatten().sort(descending=True).values
    total = s.sum()
    if total <= 0:
        return float("inf")
    cum = s.cumsum(0) / total
    i = int(torch.searchsorted(cum, torch.tensor(share, dtype=cum.dtype, device=cum.device)))
    return float(s[min(i, len(s) - 1)])


@dataclass(frozen=True)
class PruneResult:
    """Which nodes and edges stay, and the influence the decision used.

    Args:
        node_mask: [n] kept nodes. edge_mask: [n n] kept edges (rows targets).
        influence: [n] influence of each node on the chosen logits in the unpruned graph.
        kept_influence: [n] the same on the kept graph (zero for dropped nodes).
        node_share: share of all units' influence carried by the kept units.
    """

    node_mask: Bool[Tensor, " n"]
    edge_mask: Bool[Tensor, "n n"]
    influence: Float[Tensor, " n"]
    kept_influence: Float[Tensor, " n"]
    node_share: float


def prune(A: Tensor, total_abs: Tensor, logit_w: Tensor, n_units: int, n_tokens: int,
          keep: float, edge_keep: float, n_errors: int = 0) -> PruneResult:
    """Prune a graph ordered [units, errors, tokens, logits]; see the module docstring.

    `logit_w` [n] is zero except on the logit rows.
    """
    N = normalized(A, total_abs)
    inf = influence(N, logit_w)
    n = A.shape[0]
    unit_inf = inf[:n_units]
    node = torch.ones(n, dtype=torch.bool, device=A.device)
    if n_units:
        node[:n_units] = unit_inf >= _threshold(unit_inf, keep)
    Np = N * node[:, None] * node[None, :]
    inf_p = influence(Np, logit_w)
    score = Np * (inf_p + logit_w)[:, None]
    edge = (score >= _threshold(score, edge_keep)) & (score > 0)
    fixed = n_units + n_errors  # units and errors need an outgoing edge; units an incoming one
    while True:
        old = node.clone()
        edge &= node[:, None] & node[None, :]
        node[:fixed] &= edge[:, :fixed].any(0)
        node[:n_units] &= edge[:n_units].any(1)
        if torch.equal(node, old):
            break
    edge &= node[:, None] & node[None, :]
    kept = influence(N * node[:, None] * node[None, :], logit_w)
    share = float(unit_inf[node[:n_units]].sum() / unit_inf.sum().clamp_min(1e-30)) if n_units else 1.0
    return PruneResult(node, edge, inf, kept, share)


def scores(A: Tensor, total_abs: Tensor, logit_w: Tensor, node_mask: Tensor, n_units: int,
           n_errors: int, n_tokens: int) -> tuple[float, float | None]:
    """(completeness, replacement) of the graph restricted to `node_mask`; replacement is None
    without error nodes."""
    N = normalized(A, total_abs) * node_mask[:, None]
    present = node_mask.clone()
    present[n_units:n_units + n_errors] = False  # input from error nodes counts as missing
    missing = 1.0 - (N * present[None, :]).sum(1)
    missing = torch.where(total_abs > 0, missing, torch.zeros_like(missing))  # token rows: no inputs
    Nk = N * node_mask[None, :]
    inf = influence(Nk, logit_w)
    out = (inf + logit_w) * node_mask
    completeness = float(((1.0 - missing).clamp(0, 1) * out).sum() / out.sum().clamp_min(1e-30))
    replacement = None
    if n_errors:
        tok = inf[n_units + n_errors:n_units + n_errors + n_tokens].sum()
        err = inf[n_units:n_units + n_errors].sum()
        replacement = float(tok / (tok + err).clamp_min(1e-30))
    return completeness, replacement
