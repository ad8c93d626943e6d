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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ray_backend import RayConfig

__all__ = ["add_ray_args", "ray_config"]

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
    from .ray_backend import RayConfig, require_ray

    require_ray()
    addr = None if args.ray in (None, LOCAL) else args.ray
    return RayConfig(address=addr, workers=getattr(args, "ray_workers", None))
