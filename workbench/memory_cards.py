"""Memory cards: one FFN memory (layer, unit) read whole, and the units whose value writes a token.

A card joins the two halves of a key-value memory (Geva et al. 2021): the key's top trigger
prefixes and activation statistics from a harvested `MemoryIndex` over a corpus, and what the
value v_i writes, read in the vocabulary (`workbench.vocab.value_tokens`: logits of unembed(v_i),
final norm included, or through a tuned / Jacobian lens's linear part). Given the unit's
coefficient m_i on a prompt, the card also reads the sub-update m_i v_i (Geva et al. 2022).
The memory explorer shows cards; `workbench.graphs.memory_cards` builds them for graph nodes.

    card = memory_card(s, 20, 5, index=index, source=corpus)    # triggers + frequency, mean
    card = memory_card(s, 20, 5, coefficient=1.7)               # + sub_update on a prompt
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .ffn import ffn_weights
from .lenses import LensReader, direction_logits, kind_of
from .memories import MemoryExample, MemoryIndex
from .session import Session
from .vocab import TokenScore, top_tokens, value_tokens

__all__ = ["MemoryCard", "MemoryHits", "memory_card", "search_memories"]


@dataclass(frozen=True)
class MemoryCard:
    """One FFN memory (layer, neuron): what its value writes and, when known, what triggers its
    key and what it writes on a prompt.

    Args:
        layer, neuron: the unit.
        value_norm: ||v_i||.
        promoted, suppressed: [k] top tokens (`TokenScore`: token, id, logit) of the value read
            through `lens` (the logit lens: unembed(v_i); a tuned or Jacobian lens: its linear
            part at `layer`), both ends.
        triggers: top trigger prefixes (`workbench.memories.MemoryExample`: offset, coefficient,
            prefix, trigger token, next token) from a memory index, best first (empty without one).
        coefficient: m_i on a prompt (None without a prompt).
        sub_update: [k] top tokens of m_i v_i read through `lens` (empty without a coefficient;
            m_i < 0 flips the value's reading).
        frequency: share of harvested tokens with m_i > 0; mean: mean m_i; n_tokens: tokens
            harvested (all three None without a memory index).
        lens: the lens the value was read through ("logit", "tuned" or "jacobian").
    """

    layer: int
    neuron: int
    value_norm: float
    promoted: tuple[TokenScore, ...]
    suppressed: tuple[TokenScore, ...]
    triggers: tuple[MemoryExample, ...] = ()
    coefficient: float | None = None
    sub_update: tuple[TokenScore, ...] = ()
    frequency: float | None = None
    mean: float | None = None
    n_tokens: int | None = None
    lens: str = "logit"

    def to_dict(self) -> dict:
        """JSON fields (docs/cli.md, `memory_cards` of `workbench graph`)."""
        def toks(ts):
            return [{"token": t.token, "id": t.id, "score": t.score} for t in ts]

        return {"layer": self.layer, "neuron": self.neuron, "coefficient": self.coefficient,
                "value_norm": self.value_norm, "promoted": toks(self.promoted),
                "suppressed": toks(self.suppressed), "sub_update": toks(self.sub_update),
                "triggers": [dataclasses.asdict(t) for t in self.triggers],
                "frequency": self.frequency, "mean": self.mean, "n_tokens": self.n_tokens,
                "lens": self.lens}


@dataclass(frozen=True)
class MemoryHits:
    """Units whose value most promotes `token` (logit of unembed(v_i) for that token)."""

    token: str
    hits: tuple[tuple[int, int, float], ...]   # (layer, neuron, logit), best first


@torch.no_grad()
def memory_card(session: Session, layer: int, neuron: int, coefficient: float | None = None,
                index: MemoryIndex | None = None, source=None, k: int = 10, n_triggers: int | None = 5,
                context: int = 24, lens: str | LensReader = "logit") -> MemoryCard:
    """The card of unit `neuron` of `layer`.

    Value tokens: the top `k` of both ends (`workbench.vocab.value_tokens`, through `lens`).
    With `coefficient` m_i: the top `k` tokens of m_i v_i through the same lens (the logit lens
    reads it bit for bit as ``session.unembed(m_i v_i)``). With `index`: the top `n_triggers`
    trigger prefixes (all kept ones when None) with `context` tokens before the trigger, decoded
    from `source` (the harvested `Corpus`, or the session, the default, for the index's stored
    prefixes), and the key's frequency and mean; a layer the index did not harvest is a
    `WorkbenchError`.
    """
    session.check_neuron(layer, neuron)
    triggers: tuple[MemoryExample, ...] = ()
    stats: dict = {}
    if index is not None:
        row = index.row(layer)
        src = source if source is not None else session
        triggers = tuple(index.examples(layer, neuron, src, context=context, n=n_triggers))
        stats = {"frequency": float(index.frequency[row, neuron]), "mean": float(index.mean[row, neuron]),
                 "n_tokens": int(index.n_tokens)}
    vt = value_tokens(session, layer, [neuron], k=k, lens=lens)[0]
    sub: tuple[TokenScore, ...] = ()
    if coefficient is not None:
        v = ffn_weights(session, layer).values[neuron]
        sub = top_tokens(session, direction_logits(session, (coefficient * v)[None], layer, lens)[0].float(), k)
    return MemoryCard(int(layer), int(neuron), vt.norm, vt.promoted, vt.suppressed, triggers,
                      coefficient, sub, lens=kind_of(lens), **stats)


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
