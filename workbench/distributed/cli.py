"""Command-line glue: the ``--ray [ADDRESS]`` flag and what the subcommands call with it.

    workbench battery run SPEC --ray                    # local Ray on this machine
    workbench battery run SPEC --ray auto --models smollm2-135m,gemma3-270m
    workbench memories ... --ray ray://head:10001       # sharded harvest on a cluster

``--ray`` alone starts Ray locally (one worker per GPU, or one CPU worker without GPUs);
with an address it joins that cluster. Without Ray installed the flag fails with one error
naming the extra: ``pip install 'ffn-workbench[ray]'``.
"""

from __future__ import annotations

import argparse

from .ray_backend import RayConfig, require_ray

__all__ = ["add_ray_args", "ray_config", "battery_on_ray"]

LOCAL = "local"


def add_ray_args(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """Add ``--ray [ADDRESS]``, ``--ray-workers N`` (and ``--models`` for a grid)."""
    p.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                   help="run on Ray: alone starts Ray locally; ADDRESS ('auto', "
                        "'ray://host:10001') joins a cluster (needs pip install 'ffn-workbench[ray]')")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="Ray workers (default: one per GPU, or 1 without GPUs)")
    if grid:
        p.add_argument("--models", default=None, metavar="M1,M2,...",
                       help="with --ray: run the battery for each model (a model x probe grid)")


def ray_config(args) -> RayConfig:
    """The RayConfig the flags ask for; fails at once (before any model loads) without Ray."""
    require_ray()
    addr = None if args.ray in (None, LOCAL) else args.ray
    return RayConfig(address=addr, workers=getattr(args, "ray_workers", None))


def battery_on_ray(args, spec) -> tuple[list[str], int]:
    """``workbench battery run SPEC --ray``: probes (x models) as Ray tasks.

    Returns (summary lines for the command to print, exit status: 1 when a probe failed).
    """
    from .battery import ray_run_battery

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
