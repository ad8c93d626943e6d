"""Command-line arguments every subcommand shares (model, device, dtype) and the session they load.

Lives in the library so that each package's commands use the same flags; it imports no face.
"""

from __future__ import annotations

import argparse

__all__ = ["add_model_args", "load_session"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="embedded name (smollm2-135m, gemma3-270m), a model directory, or a hub name")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def load_session(args):
    from .session import Session

    return Session.load(args.model, device=args.device, dtype=args.dtype)
