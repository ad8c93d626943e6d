"""The ``workbench`` command line: a dispatcher that knows no front end.

Each subcommand is registered by the package that draws it, through the entry-point group
``workbench.commands`` declared in pyproject.toml: an entry ``NAME = "package.module:register"``
names a function ``register(subparsers)`` that adds the subcommand. This module reads the group
(`importlib.metadata`), so adding a command touches pyproject.toml and the owning package only.
Every subcommand writes JSON for machines (fields documented in its ``--help`` and in
docs/cli.md) and, where it makes sense, a standalone HTML page for people.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from ..errors import WorkbenchError

__all__ = ["main", "build_parser", "command_entry_points"]

GROUP = "workbench.commands"


def command_entry_points() -> list:
    """The registered subcommands' entry points, sorted by name."""
    eps = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if not eps:
        raise WorkbenchError(f"no subcommands are registered in the entry-point group {GROUP!r}; "
                             "reinstall the project (pip install -e .)")
    return eps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Interpretability workbench: FFN memories, vocabulary projections, SAE codes, "
                    "attribution graphs, edits.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in command_entry_points():
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
