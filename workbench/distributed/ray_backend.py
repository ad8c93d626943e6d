"""Run per-shard work on Ray: one worker actor per GPU (or per CPU), each with its own session.

``ray_map_shards(spec, fn, corpus, shards, cfg)`` starts (or joins) Ray, creates one actor per
worker, each loading its session by name on its own device, and deals shards to idle actors.
Each shard calls ``fn(session, shard_corpus, **kwargs)`` on the worker and returns a flat
dict of tensors/numbers. Results are handed to ``on_result`` as they finish (and, with
``checkpoint``, written to ``DIR/<shard key>.safetensors`` at once); a rerun with the same
checkpoint directory skips the shards already there. A worker that dies mid-shard is
restarted by Ray (``max_restarts``) and the shard is retried (``max_task_retries``), so every
shard is computed exactly once in the result: nothing lost, nothing duplicated.

Local mode (``address=None``) starts Ray on this machine with ``num_cpus``/``num_gpus``;
``address="auto"`` or ``"ray://host:10001"`` joins a running cluster. Ray is optional:
``pip install 'ffn-workbench[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, no_type_check

import torch

from ..corpus import Corpus
from ..errors import WorkbenchError
from .sharding import Shard, ShardCorpus

log = logging.getLogger(__name__)

__all__ = ["RayConfig", "RayUnavailableError", "DistributedError", "require_ray", "init_ray",
           "load_named_session", "ray_map_shards", "release_workers", "save_shard", "load_shard"]

RAY_EXTRA = "pip install 'ffn-workbench[ray]'"


class RayUnavailableError(WorkbenchError):
    """--ray was asked for but Ray is not installed."""


class DistributedError(WorkbenchError):
    """A shard or task failed on every retry."""


def require_ray():
    """Import Ray, or raise one clear error naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(f"--ray needs Ray, which is not installed ({exc}); install the "
                                  f"extra: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run.

    Args:
        address: None starts Ray locally; "auto" or "ray://HOST:PORT" joins a cluster.
        workers: worker actors (default: the GPUs Ray sees, or 1 without GPUs).
        gpus_per_worker: GPU request per worker (default: 1 when Ray sees GPUs, else 0).
        cpus_per_worker: CPU request per worker.
        num_cpus, num_gpus: resources given to a local Ray (default: Ray detects them).
        max_retries: retries of a failed shard/task and restarts of a dead worker.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    num_cpus: int | None = None
    num_gpus: int | None = None
    max_retries: int = 3
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.workers is not None and self.workers <= 0:
            raise WorkbenchError(f"workers={self.workers} must be positive")
        if self.max_retries < 0:
            raise WorkbenchError(f"max_retries={self.max_retries} must be >= 0")
        if self.cpus_per_worker <= 0:
            raise WorkbenchError(f"cpus_per_worker={self.cpus_per_worker} must be positive")


def init_ray(cfg: RayConfig):
    """Start or join Ray once per process (a running ray.init is reused)."""
    ray = require_ray()
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "configure_logging": False}
        if cfg.address in (None, "", "local"):
            kw.update(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
        else:
            kw["address"] = cfg.address
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **cfg.env}
        if "address" in kw:  # a cluster's workers get the variables through the runtime env
            kw["runtime_env"] = {"env_vars": env}
        else:  # a local Ray's workers inherit ours (a runtime env costs seconds per worker)
            for k, v in env.items():
                os.environ.setdefault(k, v)
        for attempt in range(3):  # Ray gives a local raylet 30 s; a loaded machine can miss it
            try:
                ray.init(**kw)
                break
            except Exception as exc:
                if "address" in kw or attempt == 2 or "timed out" not in str(exc):
                    raise
                log.warning("Ray start-up timed out (%s); retrying", exc)
                ray.shutdown()
    return ray


def _plan(ray, cfg: RayConfig) -> tuple[int, float, float]:
    gpus = float(ray.cluster_resources().get("GPU", 0))
    gpw = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    if gpw > 0 and gpus < gpw:
        raise WorkbenchError(f"gpus_per_worker={gpw} but the Ray cluster has {gpus:g} GPUs")
    workers = cfg.workers or (max(1, int(gpus // gpw)) if gpw > 0 else 1)
    return workers, gpw, cfg.cpus_per_worker


def load_named_session(name: str, device: str = "auto", dtype: str = "float32"):
    """Load a session by name on a worker: embedded names, directories, hub names, and the
    test/timing models ``tiny-llama``, ``tiny-gemma`` and ``random-smollm2-135m`` (seeded, so
    every worker builds the same weights)."""
    from ..session import DTYPES, Session

    if name in ("tiny-llama", "tiny-gemma"):
        from ..testing import tiny_session

        return tiny_session(name.split("-")[1], device=device if device != "auto" else "cpu",
                            prepend_bos=name == "tiny-gemma")
    if name == "random-smollm2-135m":
        from ..testing import random_session

        return random_session(device=device, dtype=DTYPES.get(dtype, torch.float32))
    return Session.load(name, device=device, dtype=dtype)


def _worker_class(ray):
    # Ray pickles this local class by value; the run-time shape checks of the test suite
    # (jaxtyping's import hook) wrap methods in closures holding weakrefs, which cannot be
    # pickled. `no_type_check` keeps the hook off this class (it has no tensor signatures).
    @no_type_check
    class ShardWorker:
        """Holds one session for its lifetime; runs shard functions on it."""

        def __init__(self, model: str, dtype: str, threads: int):
            gpu = bool(ray.get_gpu_ids())
            if not gpu:
                torch.set_num_threads(max(1, threads))
            self.device = "cuda" if gpu else "cpu"
            self.session = load_named_session(model, self.device, dtype)

        def run(self, fn: Callable, name: str, ids, shard: Shard, kwargs: dict):
            corpus = ShardCorpus(name, ids, self.session.tokenizer, shard)
            t0 = time.perf_counter()
            out = dict(fn(self.session, corpus, **kwargs))
            if self.device == "cuda":
                torch.cuda.synchronize()
            out = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
            out["_seconds"] = time.perf_counter() - t0
            out["_pid"] = os.getpid()
            return out

        def ping(self) -> str:
            return self.device

    return ray.remote(ShardWorker)


# Worker actors live as long as the driver (or until `release_workers`): a second harvest or
# statistics run on the same model reuses the loaded sessions instead of paying start-up again.
_POOLS: dict[tuple, list] = {}


def _pool(ray, model: str, dtype: str, n: int, gpw: float, cpw: float, retries: int) -> list:
    key = (model, dtype, n, gpw, cpw, retries)
    if key not in _POOLS:
        release_workers()
        Worker = _worker_class(ray)
        _POOLS[key] = [Worker.options(num_gpus=gpw, num_cpus=cpw, max_restarts=retries,
                                      max_task_retries=retries).remote(model, dtype, int(cpw))
                       for _ in range(n)]
    return _POOLS[key]


def release_workers() -> None:
    """Kill the cached worker actors (their GPUs and memory are freed)."""
    ray = require_ray()
    for actors in _POOLS.values():
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # already dead
                pass
    _POOLS.clear()


# --------------------------------------------------------------------------- checkpoints
def save_shard(path: Path, result: Mapping[str, Any]) -> Path:
    """Write one shard result: tensors to safetensors, numbers to its metadata (atomic rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in result.items() if isinstance(v, torch.Tensor)}
    scalars = {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"scalars": json.dumps(scalars)})
    os.replace(tmp, path)
    return path


def load_shard(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as f:
        out.update(json.loads(f.metadata()["scalars"]))
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


# --------------------------------------------------------------------------- dispatch
def ray_map_shards(model: str, fn: Callable, corpus: Corpus, shards: list[Shard],
                   cfg: RayConfig, *, dtype: str = "float32", kwargs: dict | None = None,
                   checkpoint: str | Path | None = None,
                   on_result: Callable[[Shard, dict], None] | None = None) -> list[dict]:
    """Run ``fn(session, ShardCorpus, **kwargs)`` for every shard on Ray workers.

    Returns the shard results in shard order (each exactly once). With ``checkpoint``, each
    result is saved as it arrives and shards already saved there are loaded, not rerun.
    """
    ray = init_ray(cfg)
    kwargs = kwargs or {}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    results: dict[int, dict] = {}
    todo: list[Shard] = []
    for s in shards:
        f = ckpt / f"{s.key}.safetensors" if ckpt else None
        if f is not None and f.exists():
            results[s.index] = load_shard(f)
            log.info("%s: reusing %s", s.key, f)
        else:
            todo.append(s)
    if todo:
        n_workers, gpw, cpw = _plan(ray, cfg)
        actors = _pool(ray, model, dtype, n_workers, gpw, cpw, cfg.max_retries)
        n_workers = min(n_workers, len(todo))
        ids_ref = ray.put(corpus.ids)
        pending = list(reversed(todo))
        inflight: dict[Any, tuple[int, Shard]] = {}

        def submit(a: int):
            s = pending.pop()
            inflight[actors[a].run.remote(fn, corpus.name, ids_ref, s, kwargs)] = (a, s)

        for a in range(n_workers):
            if pending:
                submit(a)
        try:
            while inflight:
                done, _ = ray.wait(list(inflight), num_returns=1)
                a, s = inflight.pop(done[0])
                try:
                    res = ray.get(done[0])
                except Exception as exc:
                    raise DistributedError(f"{s.key} (windows {s.lo}..{s.hi}) failed after "
                                           f"{cfg.max_retries} retries: {exc}") from exc
                if s.index in results:  # cannot happen: each shard is submitted once
                    raise DistributedError(f"{s.key} finished twice")
                results[s.index] = res
                if ckpt is not None:
                    save_shard(ckpt / f"{s.key}.safetensors", res)
                if on_result is not None:
                    on_result(s, res)
                if pending:
                    submit(a)
        except BaseException:
            release_workers()  # a failed or interrupted run leaves no busy actors behind
            raise
    missing = [s.key for s in shards if s.index not in results]
    if missing:
        raise DistributedError(f"shards missing from the result: {missing}")
    return [results[s.index] for s in shards]
