"""Controller methods for the memory explorer (memory index, one memory, search by token).

Mixed into `widgets.controller.Controller`; the explorer calls these and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import Progress
from .results import MemoryHits, MemoryRecord


class MemoryMixin:
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

    def memory(self, index, layer: int, neuron: int, n_tokens: int = 8) -> MemoryRecord:
        """One memory: trigger prefixes from the index, value tokens from `workbench.vocab`."""
        from workbench.vocab import value_tokens

        ex = index.examples(layer, neuron, self._corpus(), context=20)
        with self.lock:
            vt = value_tokens(self.session, layer, [neuron], k=n_tokens)[0]
        r = index.row(layer)
        return self._remember(MemoryRecord(
            layer=int(layer), neuron=int(neuron), examples=tuple(ex),
            promoted=tuple((t.token, t.score) for t in vt.promoted),
            suppressed=tuple((t.token, t.score) for t in vt.suppressed), value_norm=vt.norm,
            frequency=float(index.frequency[r, neuron]), mean=float(index.mean[r, neuron]),
            n_tokens=int(index.n_tokens)))

    @torch.no_grad()
    def search_memories(self, index, token: str, k: int = 10) -> MemoryHits:
        """Units of the index's layers whose value most promotes `token` (exactly one token).

        Score: the token's logit in unembed(v_i) (final norm, then W_U), as `workbench.vocab`
        reads values; only that token's column of W_U is needed.
        """
        from workbench import ffn_weights

        s = self.session
        tid = s.token_id(token)
        col = s.W_U[:, tid]
        scores = []
        with self.lock:
            for layer in index.layers:
                v = ffn_weights(s, layer).values
                scores.append((s.final_norm(v) @ col.to(v.dtype)).float())
        allsc = torch.stack(scores)                      # [L d_mlp]
        top = allsc.flatten().topk(min(k, allsc.numel()))
        d = allsc.shape[1]
        hits = tuple((int(index.layers[i // d]), int(i % d), float(v))
                     for i, v in zip(top.indices.tolist(), top.values.tolist()))
        return MemoryHits(token, hits)
