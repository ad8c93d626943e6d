"""Controller methods for the graph view: build a graph, its memory cards, scale its nodes live."""

from __future__ import annotations

from collections.abc import Sequence

from workbench.graphs import AttributionGraph, build_graph, memory_cards
from workbench.hooks import scale_neurons
from workbench.memory_cards import MemoryCard
from workbench.vocab import DistributionChange, memory_intervention

from ._base import Progress
from ._state import ControllerState

__all__ = ["GraphMixin"]


class GraphMixin(ControllerState):
    """Attribution graphs on the controller's session."""

    def graph(self, prompt: str, target: str | None = None, progress: Progress | None = None,
              **config) -> AttributionGraph:
        """`workbench.graphs.build_graph` (faithfulness off by default here: the view measures)."""
        config.setdefault("faithfulness_nodes", 0)
        if progress:
            progress(0.1, "building the attribution graph")
        with self.lock:
            g = build_graph(self.session, prompt, target, progress=False, **config)
        return self._remember(g)

    def graph_cards(self, graph: AttributionGraph, limit: int = 60) -> dict[str, MemoryCard]:
        """Memory cards of the graph's strongest unit nodes."""
        with self.lock:
            return memory_cards(self.session, graph, limit=limit)

    def graph_intervene(self, graph: AttributionGraph, node_ids: Sequence[str],
                        factor: float) -> DistributionChange:
        """Scale unit nodes (m_i -> factor m_i at their position) in the real model; the next-token
        distribution of the graph's prompt before and after (undone after the call)."""
        ivs = []
        for nid in node_ids:
            n = graph.nodes[graph.node_index(nid)]
            if n.kind != "unit":
                raise KeyError(f"node {nid!r} is a {n.kind}, not an FFN unit; only units can be scaled")
            ivs.append(scale_neurons(n.layer, [n.index], factor, positions=[n.pos]))
        with self.lock:
            return self._remember(memory_intervention(self.session, graph.prompt, ivs, k=10))
