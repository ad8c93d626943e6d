"""The attribution graph as one frozen result: nodes, kept edges, settings and a summary.

Node ids (stable across prompts of the same length, so graphs can be compared):
    ``u{layer}.{pos}.{index}``  FFN unit          ``t{pos}``          token embedding
    ``e{layer}.{pos}``          error node        ``f{layer}.{pos}.{index}`` transcoder feature
    ``l{token_id}`` / ``l{label}``  output logit (or a logit difference in contrastive mode)
In the ``sae`` basis ``f{layer}.{pos}.{index}`` is a feature of the SAE at resid_post:layer and
``r{layer}.{pos}`` that site's error node (``e{layer}.{pos}`` stays the FFN's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .._types import Float, Int, Tensor
from .config import GraphConfig

__all__ = ["GraphNode", "AttributionGraph", "SUMMARY_KEYS"]

SUMMARY_KEYS = ("nodes", "edges", "completeness", "exactness_max_rel_error", "faithfulness_spearman", "seconds")


@dataclass(frozen=True)
class GraphNode:
    """One node of a graph.

    Args:
        id: see the module docstring. kind: ``unit``, ``feature``, ``error``, ``token``, ``logit``.
        layer: block index (-1 for tokens, n_layers for logits). pos: token position.
        index: unit / feature index, token id for tokens and logits (-1 for errors and
            difference logits).
        activation: the source activation on its outgoing edges (m_i for units, 1 for tokens,
            the logit value for logits).
        influence: influence on the chosen logits (path sum of the normalised adjacency).
        value: the node's value in the frozen model as a target (NaN for tokens).
        label: short text (token string, "L5 N123 @ ' Paris'", ...).
    """

    id: str
    kind: str
    layer: int
    pos: int
    index: int
    activation: float
    influence: float
    value: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("activation", "influence", "value"):
            d[k] = None if not math.isfinite(d[k]) else float(d[k])
        return d


@dataclass(frozen=True)
class AttributionGraph:
    """A pruned attribution graph of one prompt.

    Args:
        prompt, model, basis: what it is of.
        tokens: the prompt's token strings; token_ids: their ids.
        target: the named target token (None: the top logits by probability).
        logits: labels of the logit nodes; logit_probs: their probabilities; logit_weights:
            the weights pruning used (one-hot on a named target, else the probabilities).
        nodes: the kept nodes (units ranked by influence first, then errors, tokens, logits).
        edges: [E 2] (source, target) indices into `nodes`; weights: [E] direct effects.
        adjacency: [k k] all direct edges among the kept nodes (rows targets), kept or not by
            edge pruning; the faces' live ablation reads it.
        config: the settings. summary: see SUMMARY_KEYS plus extra scores.
        candidates: how many units had their edges computed (the unpruned graph's size).
    """

    prompt: str
    model: str
    basis: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    target: str | None
    logits: tuple[str, ...]
    logit_probs: tuple[float, ...]
    logit_weights: tuple[float, ...]
    nodes: tuple[GraphNode, ...]
    edges: Int[Tensor, "E 2"]
    weights: Float[Tensor, " E"]
    adjacency: Float[Tensor, "k k"]
    config: GraphConfig
    summary: dict[str, Any] = field(default_factory=dict)
    candidates: int = 0

    def node_index(self, node_id: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.id == node_id:
                return i
        raise KeyError(f"node {node_id!r} is not in the graph")

    def units(self) -> list[GraphNode]:
        return [n for n in self.nodes if n.kind == "unit"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (graph.json): nodes, edges by node id, settings, summary."""
        ids = [n.id for n in self.nodes]
        edges = [{"source": ids[s], "target": ids[t], "weight": float(w)}
                 for (s, t), w in zip(self.edges.tolist(), self.weights.tolist())]
        return {
            "prompt": self.prompt, "model": self.model, "basis": self.basis,
            "tokens": list(self.tokens), "token_ids": list(self.token_ids), "target": self.target,
            "logits": [{"label": lab, "prob": p, "weight": w}
                       for lab, p, w in zip(self.logits, self.logit_probs, self.logit_weights)],
            "settings": self.config.to_dict(), "candidates": self.candidates,
            "nodes": [n.to_dict() for n in self.nodes], "edges": edges,
            "summary": {k: _jsonable(v) for k, v in self.summary.items()},
        }


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
