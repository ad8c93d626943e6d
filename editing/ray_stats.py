"""ROME key statistics computed on Ray workers: the same `KeyStats` as `key_stats`, from exact sums."""

from __future__ import annotations

from workbench.corpus import Corpus
from workbench.distributed import RayConfig, WorkerModel
from workbench.distributed.jobs import ray_key_moment_sums
from workbench.errors import WorkbenchError
from workbench.session import Session

from .covariance import KeyStats, stats_key

__all__ = ["key_stats_from_sums", "ray_key_stats"]


def key_stats_from_sums(sums: dict, layer: int, corpus, session: Session | None = None, n_tokens: int | None = None):
    """An `editing.covariance.KeyStats` from merged sums (C = S_kk / n, stored as float32).

    With `session` and `n_tokens`, the cache key is the one `key_stats` uses, so the result
    can be written to its cache.
    """
    n = int(sums["n"])
    if n == 0:
        raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens for the key statistics")
    key = stats_key(session, layer, corpus, n_tokens) if session is not None and n_tokens else ""
    return KeyStats(layer, (sums["sum_kk"].double() / n).float(), n, corpus.name, key)


def ray_key_stats(model: WorkerModel, layer: int, corpus: Corpus, cfg: RayConfig | None = None,
                  n_tokens: int = 100_000, window: int = 128, tokens_per_batch: int = 8192,
                  shards_per_worker: int = 2, session: Session | None = None) -> KeyStats:
    """`editing.covariance.key_stats` sharded over Ray workers (no cache read or written).

    Returns the same `KeyStats` (C = S_kk / n): the shards' float64 sums are merged exactly
    as sums, then divided once.
    """
    sums = ray_key_moment_sums(model, layer, corpus, cfg, n_tokens=n_tokens, window=window,
                               tokens_per_batch=tokens_per_batch,
                               shards_per_worker=shards_per_worker)
    return key_stats_from_sums(sums, layer, corpus, session, n_tokens)
