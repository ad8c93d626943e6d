"""`build_graph`: one prompt -> a pruned, checked attribution graph over FFN units.

    g = build_graph(s, "The Eiffel Tower is located in the city of", target=" Paris")
    g.summary   # nodes, edges, completeness, exactness_max_rel_error, faithfulness_spearman, seconds

Steps: freeze the forward (`frozen.freeze`), choose the logit nodes, select candidate units by
influence and compute all edges among them (`build.attribute`), prune (`prune.prune`), score,
then ablate the top kept units in the real model (`faithfulness.faithfulness`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..session import Session
from .build import LogitNodes, RawGraph, attribute
from .config import GraphConfig, GraphConfigError
from .frozen import Frozen, freeze
from .prune import prune, scores
from .result import AttributionGraph, GraphNode
from .weights import ModelWeights

log = logging.getLogger(__name__)

__all__ = ["build_graph", "logit_nodes", "assemble"]


def _config(config: GraphConfig | dict | None, **overrides: Any) -> GraphConfig:
    if config is None:
        config = GraphConfig()
    elif isinstance(config, dict):
        config = GraphConfig.from_dict(config)
    elif not isinstance(config, GraphConfig):
        raise GraphConfigError(f"config must be a GraphConfig or a dict, got {type(config).__name__}")
    if overrides:
        config = GraphConfig.from_dict({**config.to_dict(), **overrides})
    return config


def logit_nodes(session: Session, fz: Frozen, target: str | None, cfg: GraphConfig) -> LogitNodes:
    """Top tokens by probability (up to cfg.max_logits, until cfg.logit_prob), plus `target`.

    Influence weights: one-hot on the named target, else the probabilities.
    """
    w = fz.weights
    probs = fz.logits.softmax(-1)
    tid = session.token_id(target) if target is not None else None
    top = probs.topk(cfg.max_logits)
    ids: list[int] = []
    cum = 0.0
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        ids.append(i)
        cum += p
        if cum >= cfg.logit_prob:
            break
    if tid is not None and tid not in ids:
        ids.append(tid)
    idx = torch.tensor(ids, device=w.W_U.device)
    p = probs[idx].float()
    weights = (idx == tid).float() if tid is not None else p.clone()
    bias = w.b_U[idx].float() if w.b_U is not None else torch.zeros(len(ids), device=idx.device)
    return LogitNodes(tuple(session.to_str_tokens(ids)), tuple(ids), w.W_U[idx], bias, p, weights.to(p.device))


def assemble(raw: RawGraph, fz: Frozen, cfg: GraphConfig, *, prompt: str, model: str, target: str | None,
             logit_ids: tuple[int, ...] | None = None, seconds0: float | None = None) -> AttributionGraph:
    """Prune a raw graph and wrap it as an `AttributionGraph` (summary without faithfulness)."""
    M, P, K = raw.n_units, raw.n_tokens, len(raw.logits)
    n = M + P + K
    logit_w = torch.zeros(n, device=raw.adjacency.device)
    logit_w[M + P:] = raw.logits.weights.to(logit_w.device)
    pr = prune(raw.adjacency, raw.total_abs, logit_w, M, P, cfg.keep, cfg.edge_keep)
    completeness, replacement = scores(raw.adjacency, raw.total_abs, logit_w, pr.node_mask, M, 0, P)
    completeness_all, _ = scores(raw.adjacency, raw.total_abs, logit_w, torch.ones_like(pr.node_mask), M, 0, P)
    keep = pr.node_mask.nonzero().flatten()
    # units by influence first, then tokens, then logits
    ku = keep[keep < M]
    ku = ku[pr.influence[ku].argsort(descending=True)]
    order = torch.cat([ku, keep[keep >= M]])
    L = fz.n_layers
    nodes = []
    for j in order.tolist():
        inf_j, val = float(pr.influence[j]), float(raw.values[j])
        if j < M:
            lay, pos, idx = raw.units[j].tolist()
            nodes.append(GraphNode(f"u{lay}.{pos}.{idx}", "unit", lay, pos, idx, float(raw.unit_act[j]), inf_j, val,
                                   f"L{lay} N{idx} @ {fz.str_tokens[pos]!r}"))
        elif j < M + P:
            pos = j - M
            nodes.append(GraphNode(f"t{pos}", "token", -1, pos, int(fz.tokens[pos]), 1.0, inf_j, math.nan,
                                   fz.str_tokens[pos]))
        else:
            k = j - M - P
            tid = raw.logits.ids[k]
            nid = f"l{tid}" if tid >= 0 else f"l{raw.logits.labels[k]}"
            nodes.append(GraphNode(nid, "logit", L, fz.n_pos - 1, tid, val, inf_j, val, raw.logits.labels[k]))
    sub = raw.adjacency[order][:, order]
    em = pr.edge_mask[order][:, order]
    tgt, src = em.nonzero(as_tuple=True)
    edges = torch.stack([src, tgt], 1).cpu()
    weights = sub[tgt, src].cpu()
    rows = order[(order < M) | (order >= M + P)]
    errs = raw.exact_err[rows]
    exact = float(errs[~errs.isnan()].max()) if len(rows) else math.nan
    summary = {
        "nodes": len(nodes), "edges": int(len(weights)), "completeness": completeness,
        "exactness_max_rel_error": exact, "faithfulness_spearman": math.nan,
        "seconds": (time.perf_counter() - seconds0) if seconds0 is not None else math.nan,
        "units_kept": int(len(ku)), "candidates": M, "node_share": pr.node_share,
        "completeness_unpruned": completeness_all, "replacement_score": replacement,
    }
    return AttributionGraph(prompt, model, "units", tuple(fz.str_tokens), tuple(int(t) for t in fz.tokens.tolist()),
                            target, raw.logits.labels, tuple(float(p) for p in raw.logits.probs.tolist()),
                            tuple(float(x) for x in raw.logits.weights.tolist()), tuple(nodes), edges, weights,
                            sub.cpu(), cfg, summary, M)


def build_graph(session: Session, prompt: str | Sequence[int], target: str | None = None, config: GraphConfig | dict | None = None,
                *, weights: ModelWeights | None = None, progress: bool = True, **overrides: Any) -> AttributionGraph:
    """The pruned attribution graph of `prompt` over FFN units (exact in the frozen model).

    Args:
        session: a loaded `Session` (left untouched: only scoped hooks and reads).
        prompt: the text (BOS per the session's policy), or token ids used as they are.
        target: a token that must be exactly one token (e.g. " Paris"); pruning then follows
            its logit alone. None: the top logits by probability.
        config: `GraphConfig` or a dict; keyword overrides (``keep=0.9``) are applied on top.
    Raises:
        TokenError (target not one token), PromptTooLongError (prompt over the context),
        UnknownBasisError (basis), GraphConfigError (settings), UnsupportedModelError.
    """
    t0 = time.perf_counter()
    cfg = _config(config, **overrides)
    if target is not None:
        session.token_id(target)  # one clear error before any work
    fz = freeze(session, prompt, weights)
    logits = logit_nodes(session, fz, target, cfg)
    raw = attribute(fz, logits, cfg, progress=progress)
    text = prompt if isinstance(prompt, str) else session.tokenizer.decode(list(prompt))
    g = assemble(raw, fz, cfg, prompt=text, model=session.name, target=target, seconds0=t0)
    if cfg.faithfulness_nodes:
        from .faithfulness import faithfulness, with_faithfulness

        f = faithfulness(session, g, cfg.faithfulness_nodes, progress=progress)
        g = with_faithfulness(g, f, seconds0=t0)
    return g
