"""Graph diff: which nodes and edges gained or lost influence between two graphs of one prompt.

The caller builds both graphs (e.g. before and after applying an edit, which this package never
imports). Nodes match by id (layer, position, index), edges by (source id, target id); a node
missing from one graph counts as influence 0 there, an edge as weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShapeError
from .result import AttributionGraph

__all__ = ["NodeChange", "EdgeChange", "GraphDiff", "graph_diff"]


@dataclass(frozen=True)
class NodeChange:
    id: str
    label: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class EdgeChange:
    source: str
    target: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class GraphDiff:
    """Changes sorted by |delta|, largest first.

    Args:
        nodes: influence changes of every node in either graph.
        edges: weight changes of every kept edge in either graph.
        gained, lost: ids of nodes only in `after` / only in `before`.
        logits_before, logits_after: the logit nodes' values (target first when named).
    """

    nodes: tuple[NodeChange, ...]
    edges: tuple[EdgeChange, ...]
    gained: tuple[str, ...]
    lost: tuple[str, ...]
    logits_before: dict[str, float]
    logits_after: dict[str, float]

    def to_dict(self, k: int = 50) -> dict:
        return {"nodes": [{**n.__dict__, "delta": n.delta} for n in self.nodes[:k]],
                "edges": [{**e.__dict__, "delta": e.delta} for e in self.edges[:k]],
                "gained": list(self.gained), "lost": list(self.lost),
                "logits_before": self.logits_before, "logits_after": self.logits_after}


def _edges(g: AttributionGraph) -> dict[tuple[str, str], float]:
    ids = [n.id for n in g.nodes]
    return {(ids[s], ids[t]): float(w) for (s, t), w in zip(g.edges.tolist(), g.weights.tolist())}


def graph_diff(before: AttributionGraph, after: AttributionGraph) -> GraphDiff:
    """Compare two graphs of the same prompt tokens (raises ShapeError otherwise)."""
    if before.token_ids != after.token_ids:
        raise ShapeError(f"graphs are of different prompts ({len(before.token_ids)} vs "
                         f"{len(after.token_ids)} tokens, {before.prompt!r} vs {after.prompt!r})")
    b = {n.id: n for n in before.nodes}
    a = {n.id: n for n in after.nodes}
    nodes = [NodeChange(i, (a.get(i) or b[i]).label, b[i].influence if i in b else 0.0,
                        a[i].influence if i in a else 0.0) for i in sorted(set(a) | set(b))]
    nodes.sort(key=lambda c: -abs(c.delta))
    eb, ea = _edges(before), _edges(after)
    edges = [EdgeChange(s, t, eb.get((s, t), 0.0), ea.get((s, t), 0.0)) for s, t in sorted(set(ea) | set(eb))]
    edges.sort(key=lambda c: -abs(c.delta))

    def logits(g):
        return {n.label: n.value for n in g.nodes if n.kind == "logit"}

    return GraphDiff(tuple(nodes), tuple(edges), tuple(sorted(set(a) - set(b))), tuple(sorted(set(b) - set(a))),
                     logits(before), logits(after))
