"""Driver-side entry points: plan shards, run them on Ray workers, merge exactly.

    from workbench.distributed import RayConfig, ray_harvest
    merged, timing = ray_harvest(WorkerModel.of(s), corpus, RayConfig(), max_tokens=1_000_000)

Workers load the model by name (`WorkerModel.name`, see `load_named_session`), so the driver
needs no model of its own: only the corpus token stream (shipped once to Ray's object store)
and the BOS policy (to lay out the windows exactly as `Corpus.batches` does).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..corpus import Corpus
from ..errors import WorkbenchError
from ..session import Session
from .merge import merge_sums
from .ray_backend import RayConfig, _plan, init_ray, ray_map_shards
from .sharding import Shard, corpus_windows, plan_shards, rows_per_batch
from .stats import (
    ActivationStats,
    activation_stats_from_sums,
    activation_sums,
    key_moment_sums,
)

log = logging.getLogger(__name__)

__all__ = ["WorkerModel", "shard_plan", "run_sharded", "ray_key_moment_sums", "ray_activation_stats",
           "ray_harvest"]


@dataclass(frozen=True)
class WorkerModel:
    """What each worker loads: a model by name, its dtype, and the BOS policy of its session."""

    name: str
    dtype: str = "float32"
    bos: bool = False

    @classmethod
    def of(cls, session: Session) -> WorkerModel:
        bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
        return cls(session.name, str(session.dtype).replace("torch.", ""), bos)


def shard_plan(cfg: RayConfig, corpus: Corpus, model: WorkerModel, window: int,
               tokens_per_batch: int, max_tokens: int | None = None,
               shards_per_worker: int = 2) -> list[Shard]:
    """Shards of whole batches: ``shards_per_worker`` per worker (at least one batch each)."""
    if shards_per_worker < 1:
        raise WorkbenchError(f"shards_per_worker={shards_per_worker} must be >= 1")
    ray = init_ray(cfg)
    workers, _, _ = _plan(ray, cfg)
    n = corpus_windows(corpus, window, model.bos, max_tokens)
    return plan_shards(n, rows_per_batch(window, tokens_per_batch), workers * shards_per_worker)


def run_sharded(model: WorkerModel, fn, corpus: Corpus, cfg: RayConfig, shards: list[Shard],
                kwargs: dict, checkpoint: str | Path | None = None) -> tuple[list[dict], dict]:
    """Run `fn` on every shard; returns (results in shard order, timings)."""
    t0 = time.perf_counter()
    res = ray_map_shards(model.name, fn, corpus, shards, cfg, dtype=model.dtype, kwargs=kwargs,
                         checkpoint=checkpoint)
    t1 = time.perf_counter()
    timing = {"seconds": t1 - t0, "shards": len(shards),
              "shard_seconds": [float(r.get("_seconds", 0.0)) for r in res],
              "workers": sorted({int(r["_pid"]) for r in res if "_pid" in r})}
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in res], timing


def ray_key_moment_sums(model: WorkerModel, layer: int, corpus: Corpus, cfg: RayConfig | None = None,
                        n_tokens: int = 100_000, window: int = 128, tokens_per_batch: int = 8192,
                        shards_per_worker: int = 2) -> dict:
    """`key_moment_sums` sharded over Ray workers: ``{"sum_kk": [d_mlp d_mlp] float64, "n"}``.

    The shards' float64 sums are merged exactly as sums; `editing.ray_stats.ray_key_stats`
    turns them into the `KeyStats` that `editing.covariance.key_stats` gives.
    """
    cfg = cfg or RayConfig()
    shards = shard_plan(cfg, corpus, model, window, tokens_per_batch, n_tokens, shards_per_worker)
    parts, _ = run_sharded(model, key_moment_sums, corpus, cfg, shards,
                           dict(layer=layer, n_tokens=n_tokens, window=window,
                                tokens_per_batch=tokens_per_batch))
    return merge_sums(parts)


def ray_activation_stats(model: WorkerModel, corpus: Corpus, site: str, cfg: RayConfig | None = None,
                         head: int | None = None, skip_first: bool = False, window: int = 128,
                         tokens_per_batch: int = 8192, max_tokens: int | None = None, sae=None,
                         shards_per_worker: int = 2) -> tuple[ActivationStats, dict]:
    """SAE-site activation statistics (and an SAE's latent usage) sharded over Ray workers.

    Returns (stats, merged sums); the sums equal `activation_sums` over the whole corpus.
    """
    cfg = cfg or RayConfig()
    shards = shard_plan(cfg, corpus, model, window, tokens_per_batch, max_tokens, shards_per_worker)
    parts, _ = run_sharded(model, activation_sums, corpus, cfg, shards,
                           dict(site=site, head=head, skip_first=skip_first, window=window,
                                tokens_per_batch=tokens_per_batch, max_tokens=max_tokens, sae=sae))
    sums = merge_sums(parts)
    return activation_stats_from_sums(sums), sums


def ray_harvest(model: WorkerModel, corpus: Corpus, cfg: RayConfig | None = None,
                layers: list[int] | None = None, k: int = 20, window: int = 128,
                tokens_per_batch: int = 8192, max_tokens: int | None = None,
                backend: str = "auto", shards_per_worker: int = 2,
                checkpoint: str | Path | None = None) -> tuple[dict, dict]:
    """The FFN memory harvest sharded over Ray workers, merged exactly on the driver.

    Returns (merged harvest as `merge_harvests` gives it, timings with ``seconds`` for the
    sharded run and ``merge_seconds`` for the merge).
    """
    from .harvest import harvest_shard, merge_harvests

    cfg = cfg or RayConfig()
    shards = shard_plan(cfg, corpus, model, window, tokens_per_batch, max_tokens, shards_per_worker)
    parts, timing = run_sharded(model, harvest_shard, corpus, cfg, shards,
                                dict(layers=layers, k=k, window=window,
                                     tokens_per_batch=tokens_per_batch, max_tokens=max_tokens,
                                     backend=backend), checkpoint=checkpoint)
    t0 = time.perf_counter()
    merged = merge_harvests(parts)
    timing["merge_seconds"] = time.perf_counter() - t0
    return merged, timing
