"""Scale-out on Ray: sharded corpus harvests, sharded sums, batteries as Ray tasks.

Modules: sharding (token-window shards), merge (exact top-k and float64 sum merges), harvest
(FFN memory top-k per shard), stats (ROME key moments, SAE activation statistics as sums),
ray_backend (worker actors, retries, checkpoints), jobs (driver entry points), cli (the --ray
flag). Batteries on Ray live with the batteries (`probes.ray_battery`); ROME key statistics
from Ray sums with the editor (`editing.ray_stats`).

Ray is optional (``pip install 'ffn-workbench[ray]'``); sharding and merging work without it.
Names are imported lazily, so ``import workbench.distributed`` (the CLI does) costs nothing.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "merge": ["PAD_OFFSET", "merge_sums", "merge_topk", "order_topk"],
    "sharding": ["Shard", "ShardCorpus", "check_cover", "corpus_windows", "plan_shards",
                 "rows_per_batch"],
    "harvest": ["harvest_shard", "merge_harvests", "pack_keys", "unpack_keys"],
    "stats": ["ActivationStats", "activation_stats_from_sums", "activation_sums",
              "key_moment_sums"],
    "ray_backend": ["DistributedError", "RayConfig", "RayUnavailableError", "init_ray",
                    "load_named_session", "ray_map_shards", "release_workers", "require_ray"],
    "jobs": ["WorkerModel", "ray_activation_stats", "ray_harvest", "ray_key_moment_sums", "run_sharded",
             "shard_plan"],
}
_WHERE = {name: mod for mod, names in _NAMES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
