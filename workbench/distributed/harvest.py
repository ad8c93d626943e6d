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

from ..errors import WorkbenchError
from ..memories import _PAD, harvest_topk, pack_keys, unpack_keys
from ..session import Session

__all__ = ["harvest_shard", "pack_keys", "unpack_keys", "merge_harvests"]


def harvest_shard(session: Session, corpus, layers: Sequence[int] | None = None, k: int = 20,
                  window: int = 128, tokens_per_batch: int = 8192, max_tokens: int | None = None,
                  backend: str = "auto", progress: bool = False) -> dict:
    """Top-k prefixes per FFN key over the corpus's windows (a shard's on a `ShardCorpus`).

    Runs `workbench.memories.harvest_topk` (the single-process harvest loop) and packs its
    top-k into sort keys. Returns ``{"layers": [L] int64, "keys": [L d_mlp k] int64 packed
    (see module doc), "n": int, "fires": [L d_mlp] int64, "sum": [L d_mlp] float64}``, all on
    the CPU.
    """
    st = harvest_topk(session, corpus, layers, k, window, tokens_per_batch, max_tokens, backend, progress)
    keys = torch.where(st["offsets"] < 0, _PAD, pack_keys(st["values"], st["offsets"].clamp_min(0)))
    return {"layers": st["layers"], "keys": keys, "n": st["n"], "fires": st["fires"], "sum": st["sum"]}


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
