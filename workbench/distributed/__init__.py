"""Scale-out on Ray: sharded corpus harvests, sharded sums, batteries as Ray tasks.

Ray is optional (``pip install 'ffn-workbench[ray]'``); sharding and merging work without it.
"""

from .jobs import WorkerModel, ray_activation_stats, ray_key_stats, run_sharded, shard_plan
from .merge import PAD_OFFSET, merge_sums, merge_topk, order_topk
from .ray_backend import (
    DistributedError,
    RayConfig,
    RayUnavailableError,
    init_ray,
    load_named_session,
    ray_map_shards,
    release_workers,
    require_ray,
)
from .sharding import Shard, ShardCorpus, check_cover, corpus_windows, plan_shards, rows_per_batch
from .stats import (
    ActivationStats,
    activation_stats_from_sums,
    activation_sums,
    key_moment_sums,
    key_stats_from_sums,
)

__all__ = [
    "WorkerModel", "ray_activation_stats", "ray_key_stats", "run_sharded", "shard_plan",
    "ActivationStats", "activation_stats_from_sums", "activation_sums", "key_moment_sums",
    "key_stats_from_sums", "release_workers",
    "PAD_OFFSET", "merge_sums", "merge_topk", "order_topk",
    "DistributedError", "RayConfig", "RayUnavailableError", "init_ray", "load_named_session",
    "ray_map_shards", "require_ray",
    "Shard", "ShardCorpus", "check_cover", "corpus_windows", "plan_shards", "rows_per_batch",
]
