"""Memory cards: every FFN node of a graph is a key-value memory (Geva et al. 2021).

A card holds the value's promoted / suppressed tokens (logit lens of v_i, `workbench.vocab`),
the node's sub-update m_i v_i read in the vocabulary (its sign flips the reading when m_i < 0),
and, given a harvested `MemoryIndex`, the unit's top trigger prefixes from the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ffn import ffn_weights
from ..memories import MemoryExample, MemoryIndex
from ..session import Session
from ..vocab import TokenScore, top_tokens, value_tokens
from .result import AttributionGraph

__all__ = ["MemoryCard", "memory_card", "memory_cards"]


@dataclass(frozen=True)
class MemoryCard:
    """What one FFN unit stores and, on this prompt, writes.

    Args:
        layer, neuron: the unit. coefficient: m_i on the prompt (None without a prompt).
        value_norm: ||v_i||. promoted, suppressed: top tokens of unembed(v_i), both ends.
        sub_update: top tokens of unembed(m_i v_i) (empty without a coefficient).
        triggers: top trigger prefixes from the memory index (empty without one).
    """

    layer: int
    neuron: int
    coefficient: float | None
    value_norm: float
    promoted: tuple[TokenScore, ...]
    suppressed: tuple[TokenScore, ...]
    sub_update: tuple[TokenScore, ...]
    triggers: tuple[MemoryExample, ...]

    def to_dict(self) -> dict:
        def toks(ts):
            return [{"token": t.token, "id": t.id, "score": t.score} for t in ts]

        return {"layer": self.layer, "neuron": self.neuron, "coefficient": self.coefficient,
                "value_norm": self.value_norm, "promoted": toks(self.promoted),
                "suppressed": toks(self.suppressed), "sub_update": toks(self.sub_update),
                "triggers": [t.__dict__ for t in self.triggers]}


@torch.no_grad()
def memory_card(session: Session, layer: int, neuron: int, coefficient: float | None = None,
                index: MemoryIndex | None = None, source=None, k: int = 10, n_triggers: int = 5) -> MemoryCard:
    """The memory card of (layer, neuron). `source` is the harvested Corpus or the session
    (decodes the index's stored prefixes); it defaults to the session."""
    session.check_neuron(layer, neuron)
    vt = value_tokens(session, layer, [neuron], k)[0]
    sub: tuple[TokenScore, ...] = ()
    if coefficient is not None:
        v = ffn_weights(session, layer).values[neuron]
        sub = top_tokens(session, session.unembed((coefficient * v)[None])[0].float(), k)
    triggers: tuple[MemoryExample, ...] = ()
    if index is not None and layer in index.layers:
        triggers = tuple(index.examples(layer, neuron, source if source is not None else session, n=n_triggers))
    return MemoryCard(layer, neuron, coefficient, vt.norm, vt.promoted, vt.suppressed, sub, triggers)


def memory_cards(session: Session, graph: AttributionGraph, index: MemoryIndex | None = None, source=None,
                 k: int = 10, n_triggers: int = 5, limit: int | None = None) -> dict[str, MemoryCard]:
    """Cards of the graph's unit nodes (the first `limit`, by influence), keyed by node id."""
    units = graph.units()[:limit] if limit is not None else graph.units()
    return {n.id: memory_card(session, n.layer, n.index, n.activation, index, source, k, n_triggers) for n in units}
