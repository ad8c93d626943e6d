"""Controller methods for the memory explorer (memory index, one memory, search by token).

Mixed into `widgets.controller.Controller`; the explorer calls these and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.memory_cards import MemoryCard, MemoryHits, memory_card, search_memories

from ._base import Progress
from ._state import ControllerState


class MemoryMixin(ControllerState):
    """FFN key-value memories of the controller's session over its corpus."""

    def memory_index(self, layers: Sequence[int] | None = None, max_tokens: int = 8192,
                     k: int = 10, progress: Progress | None = None):
        """`workbench.memories.harvest` over the controller's corpus (a MemoryIndex)."""
        from workbench.memories import harvest

        if progress:
            progress(0.1, f"indexing FFN memories over {max_tokens} tokens")
        with self.lock:
            idx = harvest(self.session, self._corpus(), layers=layers, k=k, window=64,
                          max_tokens=max_tokens, progress=False)
        return self._remember(idx)

    def memory(self, index, layer: int, neuron: int, n_tokens: int = 8, lens: str = "logit") -> MemoryCard:
        """`workbench.memory_cards.memory_card`: every trigger prefix the index kept (20 tokens of
        context, from the controller's corpus), key statistics and value tokens of a unit, the
        value read through `lens`."""
        reader = self.reader(lens)        # a missing lens fails before any work
        with self.lock:
            rec = memory_card(self.session, layer, neuron, index=index, source=self._corpus(), k=n_tokens,
                              n_triggers=None, context=20, lens=reader)
        return self._remember(rec)

    def search_memories(self, index, token: str, k: int = 10) -> MemoryHits:
        """`workbench.memory_cards.search_memories` over the index's layers."""
        with self.lock:
            return search_memories(self.session, index.layers, token, k)
