"""Split a corpus's token windows into shards: exact, disjoint, and covering.

The single-process path (`Corpus.batches`) cuts the corpus into windows ``w = 0..n-1`` with
stream offsets ``starts[w] = w * width`` and groups them into batches of
``rows = tokens_per_batch // window`` consecutive windows. A shard is a contiguous range of
whole batches, ``[b_lo, b_hi)``, i.e. windows ``[b_lo * rows, min(b_hi * rows, n))``. Cutting
at batch boundaries means every batch a worker runs holds exactly the rows the single-process
run would have put in it, so each forward pass (and its float rounding) is the same one.

Invariants (checked by `check_cover`): the shards' window ranges are disjoint and their union
is ``[0, n)``; ``sum(len(s)) == n``.

`ShardCorpus` is a `Corpus` whose `window_starts` returns only one shard's starts (global
offsets), so any analysis that streams through ``corpus.batches`` runs on a shard unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._types import Int, Tensor
from ..corpus import Corpus
from ..errors import CorpusError, WorkbenchError

__all__ = ["Shard", "plan_shards", "check_cover", "ShardCorpus", "corpus_windows", "rows_per_batch"]


@dataclass(frozen=True)
class Shard:
    """Windows ``[lo, hi)`` of a corpus (indices into its window list), shard `index` of `total`."""

    index: int
    total: int
    lo: int
    hi: int

    def __post_init__(self):
        if not 0 <= self.index < self.total:
            raise WorkbenchError(f"shard index={self.index} is out of range 0..{self.total - 1}")
        if not 0 <= self.lo < self.hi:
            raise WorkbenchError(f"shard windows [{self.lo}, {self.hi}) are empty or negative")

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def key(self) -> str:
        """A stable name for checkpoint files: ``shard-00003-of-00008``."""
        return f"shard-{self.index:05d}-of-{self.total:05d}"


def rows_per_batch(window: int, tokens_per_batch: int) -> int:
    """Rows per batch, exactly as `Corpus.batches` computes it."""
    return max(1, tokens_per_batch // window)


def corpus_windows(corpus: Corpus, window: int, bos: bool, max_tokens: int | None = None) -> int:
    """Number of windows `Corpus.batches` visits for these arguments."""
    max_windows = None if max_tokens is None else max(1, max_tokens // window)
    return len(Corpus.window_starts(corpus, window, bos, max_windows))


def plan_shards(n_windows: int, rows: int, n_shards: int) -> list[Shard]:
    """Split ``n_windows`` windows (batches of ``rows``) into at most ``n_shards`` shards.

    Whole batches are dealt as evenly as possible (shard sizes differ by at most one batch);
    when there are fewer batches than shards, fewer shards are returned.
    """
    if n_windows <= 0:
        raise CorpusError(f"n_windows={n_windows}: nothing to shard")
    if rows <= 0:
        raise WorkbenchError(f"rows={rows} must be positive")
    if n_shards <= 0:
        raise WorkbenchError(f"n_shards={n_shards} must be positive")
    n_batches = -(-n_windows // rows)
    total = min(n_shards, n_batches)
    base, extra = divmod(n_batches, total)
    shards, b = [], 0
    for i in range(total):
        nb = base + int(i < extra)
        lo, hi = b * rows, min((b + nb) * rows, n_windows)
        shards.append(Shard(i, total, lo, hi))
        b += nb
    check_cover(shards, n_windows)
    return shards


def check_cover(shards: list[Shard], n_windows: int) -> None:
    """Raise unless the shards are disjoint, in order, and cover ``[0, n_windows)`` exactly."""
    pos = 0
    for s in sorted(shards, key=lambda s: s.lo):
        if s.lo != pos:
            raise WorkbenchError(f"shards leave a gap or overlap at window {pos} (next lo={s.lo})")
        pos = s.hi
    if pos != n_windows:
        raise WorkbenchError(f"shards cover windows 0..{pos}, not 0..{n_windows}")


class ShardCorpus(Corpus):
    """One shard of a corpus: same token stream, only the shard's windows (global offsets)."""

    def __init__(self, name: str, ids: Tensor, tokenizer, shard: Shard):
        super().__init__(name, ids, tokenizer)
        self.shard = shard

    @classmethod
    def of(cls, corpus: Corpus, shard: Shard, tokenizer=None) -> ShardCorpus:
        return cls(corpus.name, corpus.ids, tokenizer if tokenizer is not None else corpus.tokenizer,
                   shard)

    def __repr__(self) -> str:
        return f"ShardCorpus({self.name!r}, tokens={len(self)}, {self.shard.key})"

    def window_starts(self, window: int, bos: bool,
                      max_windows: int | None = None) -> Int[Tensor, " n"]:
        """Starts of this shard's windows (a slice of the full corpus's window list)."""
        full = super().window_starts(window, bos, max_windows)
        if self.shard.hi > len(full):
            raise CorpusError(f"{self.shard.key} covers windows up to {self.shard.hi}, but the "
                              f"corpus has {len(full)} windows of {window} tokens")
        return full[self.shard.lo:self.shard.hi]


def shard_starts(corpus: Corpus, shard: Shard, window: int, bos: bool) -> Int[Tensor, " n"]:
    """Stream offsets of a shard's windows."""
    return Corpus.window_starts(corpus, window, bos)[shard.lo:shard.hi].to(torch.int64)
