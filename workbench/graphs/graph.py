"""`build_graph`: one prompt -> a pruned, checked attribution graph over FFN units, transcoders
or residual SAE features.

    g = build_graph(s, "The Eiffel Tower is located in the city of", target=" Paris")
    g.summary   # nodes, edges, completeness, exactness_max_rel_error, faithfulness_spearman, seconds
    g = build_graph(s, prompt, " Paris", basis="transcoder", transcoders="out/transcoders")
    g.summary["replacement_score"]   # share of the logits' influence not through error nodes
    g = build_graph(s, prompt, " Paris", basis="sae", saes="out/saes")   # SAE features at resid_post:L

Steps: freeze the forward (`frozen.freeze`), the transcoder or SAE basis if asked
(`transcoders.transcoder_basis`, `sae_sites.sae_basis`), choose the logit nodes, select candidate sources by influence
and compute all edges among them (`build.attribute`), prune (`prune.prune`), score, then ablate
the top kept units / latents in the real model (`faithfulness.faithfulness`).
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
from .sae_sites import SAEs, resolve_saes, sae_basis
from .transcoders import Transcoders, resolve_transcoders, transcoder_basis
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
    M, E, P, K = raw.n_units, raw.n_errors, raw.n_tokens, len(raw.logits)
    n = M + E + P + K
    logit_w = torch.zeros(n, device=raw.adjacency.device)
    logit_w[M + E + P:] = raw.logits.weights.to(logit_w.device)
    pr = prune(raw.adjacency, raw.total_abs, logit_w, M, P, cfg.keep, cfg.edge_keep, n_errors=E)
    completeness, replacement = scores(raw.adjacency, raw.total_abs, logit_w, pr.node_mask, M, E, P)
    completeness_all, replacement_all = scores(raw.adjacency, raw.total_abs, logit_w, torch.ones_like(pr.node_mask),
                                               M, E, P)
    keep = pr.node_mask.nonzero().flatten()
    # units / latents by influence first, then error nodes by influence, then tokens, then logits
    ku, ke = keep[keep < M], keep[(keep >= M) & (keep < M + E)]
    ku = ku[pr.influence[ku].argsort(descending=True)]
    ke = ke[pr.influence[ke].argsort(descending=True)]
    order = torch.cat([ku, ke, keep[keep >= M + E]])
    L = fz.n_layers
    err_ids = raw.errors.tolist() if raw.errors is not None else []
    nodes = []
    b = raw.basis

    def where(row: int) -> tuple[str, int]:
        return b.where(row) if b is not None else ("mlp", row)

    for j in order.tolist():
        inf_j, val = float(pr.influence[j]), float(raw.values[j])
        if j < M:
            row, pos, col = raw.units[j].tolist()
            kind, idx = b.node(row, col) if b is not None else ("unit", col)
            site, lay = where(row)
            tag, letter = ("u", "N") if kind == "unit" else ("f", "F")
            at = f"L{lay}" if site == "mlp" else f"{site}:{lay}"
            nodes.append(GraphNode(f"{tag}{lay}.{pos}.{idx}", kind, lay, pos, idx, float(raw.unit_act[j]), inf_j, val,
                                   f"{at} {letter}{idx} @ {fz.str_tokens[pos]!r}"))
        elif j < M + E:
            row, pos, _ = err_ids[j - M]
            site, lay = where(row)
            tag, at = ("e", f"L{lay}") if site == "mlp" else ("r", f"{site}:{lay}")
            nodes.append(GraphNode(f"{tag}{lay}.{pos}", "error", lay, pos, -1, 1.0, inf_j, math.nan,
                                   f"{at} error @ {fz.str_tokens[pos]!r}"))
        elif j < M + E + P:
            pos = j - M - E
            nodes.append(GraphNode(f"t{pos}", "token", -1, pos, int(fz.tokens[pos]), 1.0, inf_j, math.nan,
                                   fz.str_tokens[pos]))
        else:
            k = j - M - E - P
            tid = raw.logits.ids[k]
            nid = f"l{tid}" if tid >= 0 else f"l{raw.logits.labels[k]}"
            nodes.append(GraphNode(nid, "logit", L, fz.n_pos - 1, tid, val, inf_j, val, raw.logits.labels[k]))
    sub = raw.adjacency[order][:, order]
    em = pr.edge_mask[order][:, order]
    tgt, src = em.nonzero(as_tuple=True)
    edges = torch.stack([src, tgt], 1).cpu()
    weights = sub[tgt, src].cpu()
    rows = order[(order < M) | (order >= M + E + P)]
    errs = raw.exact_err[rows]
    exact = float(errs[~errs.isnan()].max()) if len(rows) else math.nan
    kinds = [nd.kind for nd in nodes]
    summary = {
        "nodes": len(nodes), "edges": int(len(weights)), "completeness": completeness,
        "exactness_max_rel_error": exact, "faithfulness_spearman": math.nan,
        "seconds": (time.perf_counter() - seconds0) if seconds0 is not None else math.nan,
        "units_kept": kinds.count("unit"), "features_kept": kinds.count("feature"),
        "errors_kept": kinds.count("error"), "candidates": M, "error_nodes": E, "node_share": pr.node_share,
        "completeness_unpruned": completeness_all, "replacement_score": replacement,
        "replacement_score_unpruned": replacement_all,
    }
    basis = raw.basis.name if raw.basis is not None else "units"
    return AttributionGraph(prompt, model, basis, tuple(fz.str_tokens), tuple(int(t) for t in fz.tokens.tolist()),
                            target, raw.logits.labels, tuple(float(p) for p in raw.logits.probs.tolist()),
                            tuple(float(x) for x in raw.logits.weights.tolist()), tuple(nodes), edges, weights,
                            sub.cpu(), cfg, summary, M)


def build_graph(session: Session, prompt: str | Sequence[int], target: str | None = None, config: GraphConfig | dict | None = None,
                *, weights: ModelWeights | None = None, transcoders: Transcoders | None = None,
                saes: SAEs | None = None, progress: bool = True, **overrides: Any) -> AttributionGraph:
    """The pruned attribution graph of `prompt` over FFN units, transcoder latents or residual
    SAE features (exact in the frozen model, error nodes included).

    Args:
        session: a loaded `Session` (left untouched: only scoped hooks and reads).
        prompt: the text (BOS per the session's policy), or token ids used as they are.
        target: a token that must be exactly one token (e.g. " Paris"); pruning then follows
            its logit alone. None: the top logits by probability.
        config: `GraphConfig` or a dict; keyword overrides (``keep=0.9``) are applied on top.
        transcoders: with ``basis='transcoder'``: a folder of saved transcoders, a list, or a
            {layer: Transcoder} dict (layers without one: `GraphConfig.other_layers`).
        saes: with ``basis='sae'``: a folder of saved SAEs (ours or SAELens), a list, or a
            {layer: SAE} dict, each on a site resid_post:L (FFN layers: `other_layers`).
    Raises:
        TokenError (target not one token), PromptTooLongError (prompt over the context),
        UnknownBasisError (basis), GraphConfigError (settings), UnsupportedModelError,
        TranscoderMismatch (a transcoder of another model, layer or width), SAEBasisError
        (an SAE of another model, an unsupported site, a wrong width, two for one site).
    """
    t0 = time.perf_counter()
    cfg = _config(config, **overrides)
    if target is not None:
        session.token_id(target)  # one clear error before any work
    tcs = resolve_transcoders(session, transcoders) if cfg.basis == "transcoder" else None
    if tcs is None and transcoders is not None:
        raise GraphConfigError(f"transcoders were given but basis={cfg.basis!r}; use basis='transcoder'")
    sae_map = resolve_saes(session, saes) if cfg.basis == "sae" else None
    if sae_map is None and saes is not None:
        raise GraphConfigError(f"saes were given but basis={cfg.basis!r}; use basis='sae'")
    fz = freeze(session, prompt, weights)
    basis = transcoder_basis(fz, tcs, cfg.other_layers) if tcs is not None else None
    if sae_map is not None:
        basis = sae_basis(fz, sae_map, cfg.other_layers)
    logits = logit_nodes(session, fz, target, cfg)
    raw = attribute(fz, logits, cfg, progress=progress, basis=basis)
    text = prompt if isinstance(prompt, str) else session.tokenizer.decode(list(prompt))
    g = assemble(raw, fz, cfg, prompt=text, model=session.name, target=target, seconds0=t0)
    if cfg.faithfulness_nodes:
        from .faithfulness import faithfulness, with_faithfulness

        f = faithfulness(session, g, cfg.faithfulness_nodes, factor=cfg.faithfulness_factor, progress=progress,
                         transcoders=tcs, saes=sae_map, prediction=cfg.prediction or "graph",
                         weights=fz.weights)
        g = with_faithfulness(g, f, seconds0=t0)
    return g
