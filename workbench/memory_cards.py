"""Memory cards: one FFN memory (layer, unit) read whole, and the units whose value writes a token.

A card joins the two halves of a key-value memory (Geva et al. 2021): the key's top trigger
prefixes from a harvested `MemoryIndex` over a corpus, and what the value v_i writes, read in the
vocabulary (`workbench.vocab.value_tokens`: logits of unembed(v_i), final norm included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ffn import ffn_weights
from .lenses import LensReader, kind_of
from .memories import MemoryIndex
from .session import Session
from .vocab import value_tokens

__all__ = ["MemoryRecord", "MemoryHits", "memory_record", "search_memories"]


@dataclass(frozen=True)
class MemoryRecord:
    """One FFN memory (layer, neuron): its top trigger prefixes and what its value writes.

    Args:
        layer, neuron: the unit.
        examples: [k] `workbench.memories.MemoryExample` (prefix, trigger token, next token,
            coefficient), best first.
        promoted, suppressed: [k] (token, logit) of the value read through `lens` (the
            logit lens: the unembedding; a tuned or Jacobian lens: its linear part at `layer`).
        frequency: share of harvested tokens with m_i > 0; mean: mean m_i.
        n_tokens: tokens harvested. lens: the lens the value was read through.
    """

    layer: int
    neuron: int
    examples: tuple
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    value_norm: float
    frequency: float
    mean: float
    n_tokens: int
    lens: str = "logit"


@dataclass(frozen=True)
class MemoryHits:
    """Units whose value most promotes `token` (logit of unembed(v_i) for that token)."""

    token: str
    hits: tuple[tuple[int, int, float], ...]   # (layer, neuron, logit), best first


def memory_record(session: Session, index: MemoryIndex, corpus, layer: int, neuron: int,
                  n_tokens: int = 8, context: int = 20, lens: str | LensReader = "logit") -> MemoryRecord:
    """The card of unit `neuron` of `layer`: trigger prefixes from `index` over `corpus`
    (the corpus it was harvested from), value tokens from `workbench.vocab`."""
    r = index.row(layer)
    session.check_neuron(layer, neuron)
    ex = index.examples(layer, neuron, corpus, context=context)
    vt = value_tokens(session, layer, [neuron], k=n_tokens, lens=lens)[0]
    return MemoryRecord(
        layer=int(layer), neuron=int(neuron), examples=tuple(ex),
        promoted=tuple((t.token, t.score) for t in vt.promoted),
        suppressed=tuple((t.token, t.score) for t in vt.suppressed), value_norm=vt.norm,
        frequency=float(index.frequency[r, neuron]), mean=float(index.mean[r, neuron]),
        n_tokens=int(index.n_tokens), lens=kind_of(lens))


@torch.no_grad()
def search_memories(session: Session, layers, token: str, k: int = 10) -> MemoryHits:
    """Units of `layers` whose value most promotes `token` (exactly one token).

    Score: the token's logit in unembed(v_i) (final norm, then W_U), as `workbench.vocab`
    reads values; only that token's column of W_U is needed.
    """
    s = session
    layers = [s.check_layer(int(ly)) for ly in layers]
    tid = s.token_id(token)
    col = s.W_U[:, tid]
    scores = []
    for layer in layers:
        v = ffn_weights(s, layer).values
        scores.append((s.final_norm(v) @ col.to(v.dtype)).float())
    allsc = torch.stack(scores)                      # [L d_mlp]
    top = allsc.flatten().topk(min(k, allsc.numel()))
    d = allsc.shape[1]
    hits = tuple((int(layers[i // d]), int(i % d), float(v))
                 for i, v in zip(top.indices.tolist(), top.values.tolist()))
    return MemoryHits(token, hits)
