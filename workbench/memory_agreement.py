"""Key-value agreement and composition per layer (Geva et al. 2021, Sec. 4-5).

Agreement: a key i "agrees" with its value when the next token after one of its top trigger
prefixes is among the top `k_tokens` tokens its value promotes, i.e. among the largest entries
of unembed(v_i) (read with the final norm as `workbench.vocab` does). The share of agreeing
keys per layer is compared with a random-key baseline: the same test with each key's
next tokens paired with another key's value (a fixed random permutation within the layer).

Composition: for sampled corpus tokens, the FFN output's top token (argmax unembed(FFN(x)))
is compared with the top token of each of its `top_memories` strongest sub-updates m_i v_i
(ranked by |m_i| ||v_i||; a sub-update with m_i < 0 promotes argmin unembed(v_i)); the share
of tokens where none matches is the share of outputs that are compositions, not one memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ._types import Int, Tensor
from .capture import capture_tokens
from .corpus import Corpus
from .errors import ShapeError
from .ffn import ffn_weights
from .hooks import Site
from .session import Session, TokenBatch

if TYPE_CHECKING:
    from .memories import MemoryIndex

log = logging.getLogger(__name__)

__all__ = ["AgreementTable", "agreement", "value_top_ids"]


@torch.no_grad()
def value_top_ids(session: Session, layer: int, k: int = 10, chunk: int = 256
                  ) -> tuple[Int[Tensor, "d_mlp k"], Int[Tensor, " d_mlp"], Int[Tensor, " d_mlp"]]:
    """(top-k promoted token ids, argmax, argmin) of unembed(v_i) for every value of `layer`.

    Computed in chunks of values, so the [d_mlp d_vocab] projection is never held at once.
    """
    if k <= 0:
        raise ShapeError(f"k={k} must be >= 1")
    values = ffn_weights(session, layer).values
    tops, amax, amin = [], [], []
    for i in range(0, values.shape[0], chunk):
        lg = session.unembed(values[i : i + chunk]).float()
        tops.append(lg.topk(k, dim=-1).indices)
        amax.append(lg.argmax(-1))
        amin.append(lg.argmin(-1))
    return torch.cat(tops), torch.cat(amax), torch.cat(amin)


@dataclass(frozen=True)
class AgreementTable:
    """Per-layer agreement (see module docstring).

    Args:
        layers: [L].
        agreement: share of keys whose value's top-`k_tokens` tokens contain the next token of
            at least one of the key's top-`prefixes` trigger prefixes.
        baseline: the same share with values paired to random other keys of the layer.
        top1: share of keys whose value's top-1 token is the next token of the top-1 prefix
            (Geva 2021's strictest reading); top1_baseline: its random-key baseline.
        composition: share of sampled tokens whose FFN output's top token is the top token of
            none of the `top_memories` strongest sub-updates; None when not computed.
        n_keys: keys with at least one trigger prefix.
    """

    layers: tuple[int, ...]
    agreement: tuple[float, ...]
    baseline: tuple[float, ...]
    top1: tuple[float, ...]
    top1_baseline: tuple[float, ...]
    composition: tuple[float | None, ...]
    n_keys: tuple[int, ...]
    k_tokens: int
    prefixes: int
    top_memories: int
    composition_tokens: int

    def rows(self) -> list[dict]:
        return [{"layer": a, "agreement": b, "random_baseline": c, "ratio": (b / c if c > 0 else None),
                 "top1": d, "top1_baseline": e, "composition": f, "n_keys": g}
                for a, b, c, d, e, f, g in zip(self.layers, self.agreement, self.baseline, self.top1,
                                               self.top1_baseline, self.composition, self.n_keys)]


@torch.no_grad()
def agreement(session: Session, index: MemoryIndex, corpus: Corpus | None = None, k_tokens: int = 10,
              prefixes: int = 3, top_memories: int = 10, composition_tokens: int = 2048, seed: int = 0,
              progress: bool = True) -> AgreementTable:
    """Per-layer key-value agreement vs a random-key baseline, and the composition share.

    `corpus`: the harvested corpus (needed for composition and for prefixes beyond the
    index's stored context); without it, next tokens come from the index's stored context.
    """
    if k_tokens <= 0 or prefixes <= 0 or top_memories <= 0:
        raise ShapeError(f"k_tokens={k_tokens}, prefixes={prefixes} and top_memories={top_memories} "
                         "must be >= 1")
    if prefixes > index.k:
        raise ShapeError(f"prefixes={prefixes} exceeds the index's k={index.k}")
    gen = torch.Generator().manual_seed(seed)
    agree, base, t1, t1b, comp, nkeys = [], [], [], [], [], []
    dev = session.device
    sample = None
    if composition_tokens and corpus is not None:
        sample = _composition_sample(session, corpus, index, composition_tokens)
    for layer in tqdm(index.layers, desc="agreement", disable=not progress, leave=False):
        top, amax, amin = value_top_ids(session, layer, k_tokens)
        nxt = (index.next_token_ids(layer, corpus, prefixes) if corpus is not None
               else index.next_token_ids(layer, prefixes)).to(dev)          # [d_mlp n]
        has = (nxt >= 0).any(-1)
        perm = torch.randperm(index.d_mlp, generator=gen).to(dev)
        n = max(int(has.sum()), 1)

        a, a1 = _shares(top, amax, nxt, has, n)
        b, b1 = _shares(top[perm], amax[perm], nxt, has, n)
        agree.append(a)
        base.append(b)
        t1.append(a1)
        t1b.append(b1)
        nkeys.append(int(has.sum()))
        comp.append(_composition(session, layer, sample, amax, amin, top_memories) if sample else None)
        log.info("layer %d: agreement %.4f baseline %.4f", layer, a, b)
    return AgreementTable(tuple(index.layers), tuple(agree), tuple(base), tuple(t1), tuple(t1b), tuple(comp),
                          tuple(nkeys), k_tokens, prefixes, top_memories, composition_tokens)


def _shares(top: Tensor, first: Tensor, nxt: Tensor, has: Tensor, n: int) -> tuple[float, float]:
    hit = (top[:, :, None] == nxt[:, None, :]).any(-1).any(-1) & has
    h1 = (first == nxt[:, 0]) & (nxt[:, 0] >= 0)
    return float(hit.sum()) / n, float(h1.sum()) / n


def _composition_sample(session: Session, corpus: Corpus, index: MemoryIndex, n_tokens: int) -> dict:
    """Coefficients and FFN outputs of every indexed layer on the first `n_tokens` tokens."""
    sites = [Site(kind, layer) for layer in index.layers for kind in ("mlp_post", "mlp_out")]
    keep: dict[Site, list[Tensor]] = {s: [] for s in sites}
    got = 0
    for wb in corpus.batches(session, window=index.window, tokens_per_batch=1024,
                             max_tokens=max(n_tokens, index.window), progress=False):
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
        cap = capture_tokens(session, TokenBatch(wb.tokens, lengths), sites)
        b0 = int(wb.bos)
        for s in sites:
            keep[s].append(cap[s][:, b0:].reshape(-1, cap[s].shape[-1]))
        got += keep[sites[0]][-1].shape[0]
        if got >= n_tokens:
            break
    return {s: torch.cat(v)[:n_tokens] for s, v in keep.items()}


def _composition(session: Session, layer: int, sample: dict, argmax: Tensor, argmin: Tensor, top_m: int) -> float:
    m = sample[Site("mlp_post", layer)].float()                    # [n d_mlp]
    out_top = torch.cat([session.unembed(x).argmax(-1) for x in sample[Site("mlp_out", layer)].split(256)])
    norms = torch.linalg.vector_norm(ffn_weights(session, layer).values.float(), dim=-1)
    strongest = (m.abs() * norms).topk(min(top_m, m.shape[1]), dim=-1).indices   # [n top_m]
    mem_top = torch.where(m.gather(1, strongest) >= 0, argmax[strongest], argmin[strongest])
    return float((~(mem_top == out_top[:, None]).any(-1)).float().mean())
