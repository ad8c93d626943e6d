"""Batteries on Ray: every (model, probe) pair is one Ray task with a GPU request.

The driver loads no model. For each model of the grid it builds the battery spec with that
model (``dataclasses.replace(spec, model=m)``), looks up each probe's cache file
``OUT/cache/<probe key>.json`` (the key and format of `probes.runner`), and submits a task for
every probe not yet there (all of them with ``force``). Tasks run on whichever worker is free;
a worker keeps its sessions and its `ProbeContext` per (battery, model), so probes of one
battery that land on the same worker share corpus captures. Each finished task's result is
written to its cache file at once (a crash or interrupt loses only unfinished probes, and a
rerun skips the finished ones). A task whose worker dies is retried by Ray (``max_retries``);
an error raised by a probe itself is not retried (it would fail again) and is reported as the
probe's failure. Finally `probes.runner.run_battery` assembles each model's JSON and HTML from
the cache, exactly as a single-process run does.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any, cast

from workbench.distributed.cli import ray_config
from workbench.distributed.ray_backend import DistributedError, RayConfig, init_ray, release_workers
from workbench.errors import WorkbenchError
from workbench.session import Session

log = logging.getLogger(__name__)

__all__ = ["ray_run_battery", "grid_out_dirs", "battery_on_ray"]

_SESSIONS: dict[tuple, Any] = {}  # per worker process: (model, device, dtype) -> Session
_CONTEXTS: dict[tuple, Any] = {}  # per worker process: (spec hash, device) -> ProbeContext


def _probe_task(spec, probe_name: str) -> dict:
    """Run one probe of `spec` on this worker (the session is loaded once per worker)."""
    import ray

    from workbench.distributed.ray_backend import load_named_session
    from workbench.provenance import meta

    from .context import ProbeContext
    from .registry import get_kind

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    probe = next(p for p in spec.probes if p.name == probe_name)
    t0 = time.perf_counter()
    try:
        skey = (spec.model, device, spec.dtype)
        if skey not in _SESSIONS:
            _SESSIONS[skey] = load_named_session(spec.model, device, spec.dtype)
        ckey = (spec.hash(), device)
        if ckey not in _CONTEXTS:
            _CONTEXTS[ckey] = ProbeContext(spec, session=_SESSIONS[skey], progress=False)
        ctx = _CONTEXTS[ckey]
        result = get_kind(probe.kind).run(ctx, dict(probe.params))
        return {"result": result, "seconds": time.perf_counter() - t0,
                "model": meta(ctx.session)["model"], "error": None}
    except Exception as exc:  # a probe's own error: reported, not retried
        if not isinstance(exc, WorkbenchError):
            log.error("probe %s failed:\n%s", probe_name, traceback.format_exc())
        return {"result": None, "seconds": time.perf_counter() - t0, "model": None,
                "error": f"{type(exc).__name__}: {exc}"}


class _FailedOnRay:
    """Stands in for the session when the runner assembles results: any probe that reaches it
    (one whose Ray task failed) is recorded as failed with the tasks' errors."""

    def __init__(self, errors: dict[str, str]):
        self._errors = errors

    def __getattr__(self, name):
        msgs = "; ".join(f"{k}: {v}" for k, v in self._errors.items())
        raise DistributedError(f"the probe's Ray task failed ({msgs})")


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_") or "model"


def grid_out_dirs(models: list[str], out_dir: str | Path) -> list[Path]:
    """One model: OUT itself; a grid: OUT/<model slug> per model."""
    out = Path(out_dir)
    return [out] if len(models) == 1 else [out / _slug(m) for m in models]


def ray_run_battery(spec, out_dir: str | Path, cfg: RayConfig | None = None,
                    models: list[str] | None = None, force: bool = False,
                    progress: bool = False) -> dict[str, Any]:
    """Run a battery (or a model x probe grid) as Ray tasks; returns per-model results + stats.

    Returns ``{"results": {model: results dict as run_battery writes it}, "ray": {"submitted",
    "skipped", "failed", "seconds", "out_dirs"}}``.
    """
    from workbench.provenance import write_json

    from .runner import run_battery
    from .spec import BatterySpec, load_spec

    if not isinstance(spec, BatterySpec):
        spec = load_spec(spec)  # validated before Ray starts
    cfg = cfg or RayConfig()
    models = list(models or [spec.model])
    if len(set(models)) != len(models):
        raise WorkbenchError(f"models={models} lists a model twice")
    specs = [dataclasses.replace(spec, model=m) for m in models]
    outs = grid_out_dirs(models, out_dir)
    ray = init_ray(cfg)
    release_workers()  # idle harvest/statistics actors would hold the CPUs/GPUs tasks need
    gpus = float(ray.cluster_resources().get("GPU", 0))
    gpw = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    task = ray.remote(_probe_task).options(num_gpus=gpw, num_cpus=cfg.cpus_per_worker,
                                           max_retries=cfg.max_retries)
    t0 = time.perf_counter()
    refs: dict[Any, tuple[int, Any, Path]] = {}
    skipped = 0
    for i, (sp, out) in enumerate(zip(specs, outs)):
        for probe in sp.probes:
            path = out / "cache" / f"{sp.probe_key(probe)}.json"
            if path.exists() and not force:
                skipped += 1
                continue
            refs[task.remote(sp, probe.name)] = (i, probe, path)
    errors: list[dict[str, str]] = [{} for _ in specs]
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i, probe, path = refs[done[0]]
        try:
            res = ray.get(done[0])
        except Exception as exc:  # worker died on every retry
            res = {"error": f"{type(exc).__name__}: {exc}"}
        if res.get("error"):
            errors[i][probe.name] = res["error"]
            log.warning("probe %s on %s failed: %s", probe.name, specs[i].model, res["error"])
            continue
        write_json(path, {"key": specs[i].probe_key(probe), "model": res["model"],
                          "spec": probe.to_dict(), "seconds": res["seconds"],
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "result": res["result"]})
    results = {}
    for sp, out, err in zip(specs, outs, errors):
        # every finished probe is cached now; failed ones meet the stand-in session
        try:
            # the stand-in raises on any use: a typed Session is what run_battery reads
            results[sp.model] = run_battery(sp, out, force=False,
                                            session=cast(Session, _FailedOnRay(err)), progress=progress)
        except DistributedError as exc:  # no probe of this model finished: nothing to assemble
            raise DistributedError(f"every probe of model {sp.model!r} failed on Ray: "
                                   + "; ".join(f"{k}: {v}" for k, v in err.items())) from exc
    n_failed = sum(len(e) for e in errors)
    return {"results": results,
            "ray": {"submitted": len(refs), "skipped": skipped, "failed": n_failed,
                    "seconds": time.perf_counter() - t0, "out_dirs": [str(o) for o in outs]}}


def battery_on_ray(args, spec) -> tuple[list[str], int]:
    """``workbench battery run SPEC --ray``: probes (x models) as Ray tasks.

    Returns (summary lines for the command to print, exit status: 1 when a probe failed).
    """
    cfg = ray_config(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = ray_run_battery(spec, args.out, cfg, models=models, force=args.force,
                          progress=not args.no_progress)
    r = out["ray"]
    lines = [f"ray: {r['submitted']} probe tasks ran, {r['skipped']} reused, {r['failed']} "
             f"failed in {r['seconds']:.1f} s"]
    for (model, res), d in zip(out["results"].items(), r["out_dirs"]):
        c = res["counts"]
        lines.append(f"{model}: {c['cached'] + c['ran']} finished, {c['failed']} failed -> {d}")
        lines += [f"  {p['name']}: {p['error']}" for p in res["probes"] if p["status"] == "failed"]
    return lines, int(r["failed"] > 0)
