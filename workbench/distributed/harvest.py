"""FFN memory harvest per shard: each key's top-k triggering prefixes, kept on the device.

For every chosen layer l and key i, the coefficient m_i (site ``mlp_post:l``) at the last
token of each corpus prefix (every real, non-BOS position of every window) is a candidate;
a shard keeps the k best (value, offset) pairs per key, where offset is the corpus stream
offset of the prefix's last token, plus the sums behind each key's activation frequency
and mean:  n (tokens), fires_i = #{t : m_i(t) > 0}, S_i = sum_t m_i(t) (per batch in float32,
accumulated in float64, as `workbench.memories.harvest` does). The merged dict feeds
`workbench.memories.index_from_merged`, giving the same `MemoryIndex` as `harvest`.

Order and ties. Candidates are ranked by (value desc, offset asc), a strict total order, so
the top-k is unique and `merge_topk` of shard results equals the top-k of the whole corpus
prefix for prefix, also when values tie (identical contexts give identical coefficients).
On the device both are packed into one int64 sort key per candidate,

    key = ordered(value) * 2^32 + (2^32 - 1 - offset),

where ordered() maps float32 bits to a signed integer of the same order (-0.0 counted as
+0.0); one `topk` over keys then realises the order exactly. Offsets must be < 2^32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._types import Float, Int, Tensor
from ..capture import capture_tokens
from ..errors import CorpusError, WorkbenchError
from ..hooks import Site
from ..session import TokenBatch

__all__ = ["harvest_shard", "pack_keys", "unpack_keys", "merge_harvests"]

_LOW = (1 << 32) - 1
_PAD = torch.iinfo(torch.int64).min


def _ordered(v: Float[Tensor, "..."]) -> Int[Tensor, "..."]:
    bits = (v.float() + 0.0).view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)


def pack_keys(values: Float[Tensor, "..."], offsets: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """One int64 per (value, offset): larger is better; equal only for equal pairs."""
    return (_ordered(values) << 32) + (_LOW - offsets.to(torch.int64))


def unpack_keys(keys: Int[Tensor, "..."]) -> tuple[Float[Tensor, "..."], Int[Tensor, "..."]]:
    """(values float32, offsets) of packed keys; pads come back as (-inf, -1)."""
    pad = keys == _PAD
    o = (keys >> 32).to(torch.int32)
    bits = torch.where(o < 0, o ^ 0x7FFFFFFF, o)
    values = bits.view(torch.float32).clone()
    offsets = _LOW - (keys & _LOW)
    values[pad] = float("-inf")
    offsets[pad] = -1
    return values, offsets


@torch.no_grad()
def harvest_shard(session, corpus, layers: Sequence[int] | None = None, k: int = 20,
                  window: int = 128, tokens_per_batch: int = 8192, max_tokens: int | None = None,
                  backend: str = "generic", progress: bool = False) -> dict:
    """Top-k prefixes per FFN key over the corpus's windows (a shard's on a `ShardCorpus`).

    Returns ``{"layers": [L] int64, "keys": [L d_mlp k] int64 packed (see module doc),
    "n": int, "fires": [L d_mlp] int64, "sum": [L d_mlp] float64}``, all on the CPU; the
    top-k stays on the session's device while streaming.
    """
    layers = list(range(session.n_layers)) if layers is None else [session.check_layer(x) for x in layers]
    if not layers:
        raise WorkbenchError("layers is empty; give at least one layer")
    if k <= 0:
        raise WorkbenchError(f"k={k} must be positive")
    if len(corpus) >= 1 << 32:
        raise CorpusError(f"corpus of {len(corpus)} tokens: offsets must stay below 2^32")
    dev, L, U = session.device, len(layers), session.d_mlp
    sites = [Site("mlp_post", layer) for layer in layers]
    keys = torch.full((L, U, k), _PAD, dtype=torch.int64, device=dev)
    fires = torch.zeros(L, U, dtype=torch.int64, device=dev)
    sums = torch.zeros(L, U, dtype=torch.float64, device=dev)
    n = 0
    for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                             max_tokens=max_tokens, progress=progress, desc="harvest"):
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
        cap = capture_tokens(session, TokenBatch(wb.tokens, lengths), sites, backend=backend)
        b0 = int(wb.bos)
        off = wb.offsets()[:, b0:].reshape(-1).to(dev)  # [t]
        n += off.numel()
        for j, s in enumerate(sites):
            m = cap[s][:, b0:].reshape(-1, U)  # [t U]
            fires[j] += (m > 0).sum(0)
            sums[j] += m.sum(0, dtype=torch.float32).double()  # as workbench.memories.harvest
            cand = pack_keys(m.T, off[None, :])  # [U t]
            kk = min(k, cand.shape[1])
            top = cand.topk(kk, dim=1).values
            keys[j] = torch.cat([keys[j], top], 1).topk(k, dim=1).values
        del cap
    if n == 0:
        raise CorpusError(f"corpus {corpus.name!r} gave no tokens to harvest")
    return {"layers": torch.tensor(layers, dtype=torch.int64), "keys": keys.cpu(), "n": n,
            "fires": fires.cpu(), "sum": sums.cpu()}


def merge_harvests(parts: Sequence[dict]) -> dict:
    """Exact merge of shard harvests: top-k of the union of keys, sums and counts added.

    Returns the merged dict plus ``values`` [L d_mlp k] float32, ``offsets`` [L d_mlp k]
    int64 (-1 for pads), ``frequency`` and ``mean`` [L d_mlp] (fires / n, sum / n).
    """
    if not parts:
        raise WorkbenchError("merge_harvests needs at least one shard harvest")
    layers = parts[0]["layers"]
    for p in parts:
        if not torch.equal(p["layers"], layers) or p["keys"].shape != parts[0]["keys"].shape:
            raise WorkbenchError("shard harvests disagree on layers or shapes")
    k = parts[0]["keys"].shape[-1]
    keys = torch.cat([p["keys"] for p in parts], -1).topk(k, dim=-1).values
    n = sum(int(p["n"]) for p in parts)
    fires = sum(p["fires"] for p in parts)
    sums = torch.zeros_like(parts[0]["sum"], dtype=torch.float64)
    for p in parts:
        sums += p["sum"].double()
    values, offsets = unpack_keys(keys)
    return {"layers": layers, "keys": keys, "n": n, "fires": fires, "sum": sums,
            "values": values, "offsets": offsets, "frequency": fires.double() / n,
            "mean": sums / n}
