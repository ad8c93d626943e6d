"""Memory cards of a graph's unit nodes: every FFN node is a key-value memory (Geva et al. 2021).

Each card is a `workbench.memory_cards.MemoryCard` built with the node's coefficient m_i on the
prompt: the value's promoted / suppressed tokens, the node's sub-update m_i v_i read in the
vocabulary (its sign flips the reading when m_i < 0), and, given a harvested `MemoryIndex`, the
unit's top trigger prefixes and activation statistics from the corpus.
"""

from __future__ import annotations

from ..memories import MemoryIndex
from ..memory_cards import MemoryCard, memory_card
from ..session import Session
from .result import AttributionGraph

__all__ = ["memory_cards"]


def memory_cards(session: Session, graph: AttributionGraph, index: MemoryIndex | None = None, source=None,
                 k: int = 10, n_triggers: int = 5, limit: int | None = None) -> dict[str, MemoryCard]:
    """Cards of the graph's unit nodes (the first `limit`, by influence), keyed by node id.

    `source` is the harvested Corpus or the session (decodes the index's stored prefixes; the
    default); a node of a layer the index did not harvest gets a card without triggers.
    """
    units = graph.units()[:limit] if limit is not None else graph.units()
    return {n.id: memory_card(session, n.layer, n.index, n.activation,
                              index if index is not None and n.layer in index.layers else None,
                              source, k, n_triggers) for n in units}
