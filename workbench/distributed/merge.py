"""Exact merges of per-shard results: top-k lists and sums.

Top-k. A shard's harvest keeps, for every key, its k best (value, offset) pairs, where
``offset`` is the corpus stream offset of the prefix's last token (unique per token). The
global top-k of a union of shards is contained in the union of the shards' top-k lists, so

    topk(A u B) = topk(topk(A) u topk(B))

holds exactly. Ties are broken by the total order "larger value first, then smaller offset"
(offsets are unique, so the order is strict and the result is unique). Padding entries
(shards with fewer than k tokens) have value -inf and offset -1 and sort last.

Sums. Second moments (C = E[k k^T]), activation means and frequencies travel as sums and
counts: ``S = sum_t x_t``, ``n``. Shards are merged by adding in float64 in shard order;
counts add exactly as integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .._types import Float, Int, Tensor
from ..errors import ShapeError, WorkbenchError

__all__ = ["order_topk", "merge_topk", "merge_sums", "PAD_OFFSET"]

PAD_OFFSET = -1
_BIG = torch.iinfo(torch.int64).max


def order_topk(values: Float[Tensor, "... n"], offsets: Int[Tensor, "... n"],
               k: int) -> tuple[Float[Tensor, "... k"], Int[Tensor, "... k"]]:
    """The k best entries of each row under (value desc, offset asc); pads rank last.

    Two stable sorts: first by offset ascending, then by value descending; a stable sort keeps
    the offset order among equal values. NaN values are refused.
    """
    if values.shape != offsets.shape:
        raise ShapeError(f"values {tuple(values.shape)} and offsets {tuple(offsets.shape)} differ")
    if k <= 0:
        raise WorkbenchError(f"k={k} must be positive")
    if torch.isnan(values).any():
        raise WorkbenchError("top-k values hold NaN; a harvest never produces NaN")
    offsets = offsets.to(torch.int64)
    okey = torch.where(offsets < 0, torch.full_like(offsets, _BIG), offsets)
    okey, idx = torch.sort(okey, dim=-1, stable=True)
    v = torch.gather(values, -1, idx)
    o = torch.gather(offsets, -1, idx)
    # pads (-inf) must trail real -inf-free entries; values are finite or -inf
    _, idx2 = torch.sort(v, dim=-1, descending=True, stable=True)
    idx2 = idx2[..., :k]
    return torch.gather(v, -1, idx2), torch.gather(o, -1, idx2)


def merge_topk(parts: Sequence[tuple[Tensor, Tensor]], k: int | None = None
               ) -> tuple[Float[Tensor, "... k"], Int[Tensor, "... k"]]:
    """Exact top-k of the union of per-shard top-k lists.

    Args:
        parts: per shard, (values [..., k_s], offsets [..., k_s]) with equal leading dims.
        k: entries to keep (default: the largest k_s).

    Returns:
        (values [..., k], offsets [..., k]) in (value desc, offset asc) order. When the shards
        together hold fewer than k entries per row, the tail is padding (-inf, -1).
    """
    if not parts:
        raise WorkbenchError("merge_topk needs at least one shard result")
    lead = parts[0][0].shape[:-1]
    for v, o in parts:
        if v.shape[:-1] != lead or o.shape != v.shape:
            raise ShapeError(f"shard top-k shapes differ: {tuple(v.shape)} / {tuple(o.shape)} "
                             f"vs leading dims {tuple(lead)}")
    k = k or max(v.shape[-1] for v, _ in parts)
    values = torch.cat([v for v, _ in parts], -1)
    offsets = torch.cat([o.to(torch.int64) for _, o in parts], -1)
    if values.shape[-1] < k:
        pad = k - values.shape[-1]
        values = torch.cat([values, values.new_full((*lead, pad), float("-inf"))], -1)
        offsets = torch.cat([offsets, offsets.new_full((*lead, pad), PAD_OFFSET)], -1)
    return order_topk(values, offsets, k)


def merge_sums(parts: Sequence[Mapping[str, Tensor | int | float]]) -> dict[str, Tensor | int | float]:
    """Add per-shard sums key by key: tensors in float64 (integers stay integers, floats floats).

    Every part must have the same keys, the same kind of value (tensor or number) and the
    same shapes per key.
    """
    if not parts:
        raise WorkbenchError("merge_sums needs at least one shard result")
    keys = list(parts[0])
    out: dict[str, Tensor | int | float] = {}
    for p in parts:
        if list(p) != keys:
            raise WorkbenchError(f"shard sums have keys {sorted(p)}, expected {sorted(keys)}")
    for key in keys:
        vals = [p[key] for p in parts]
        if isinstance(vals[0], torch.Tensor):
            tensors = [v for v in vals if isinstance(v, torch.Tensor)]
            if len(tensors) != len(vals):
                raise ShapeError(f"sum {key!r}: some shards hold a tensor, others a number")
            shape = tensors[0].shape
            for v in tensors:
                if v.shape != shape:
                    raise ShapeError(f"sum {key!r}: shard shapes {tuple(v.shape)} vs {tuple(shape)}")
            if tensors[0].dtype.is_floating_point:
                acc = torch.zeros(shape, dtype=torch.float64)
                for v in tensors:
                    acc += v.detach().to("cpu", torch.float64)
            else:
                acc = torch.zeros(shape, dtype=torch.int64)
                for v in tensors:
                    acc += v.detach().to("cpu", torch.int64)
            out[key] = acc
        elif isinstance(vals[0], int):
            out[key] = int(sum(vals))
        else:
            out[key] = float(sum(float(v) for v in vals))
    return out
