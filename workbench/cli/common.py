"""Arguments and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="embedded name (smollm2-135m, gemma3-270m), a model directory, or a hub name")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def load_session(args):
    from ..session import Session

    return Session.load(args.model, device=args.device, dtype=args.dtype)


def meta(session=None, **extra) -> dict[str, Any]:
    """Provenance stored in every JSON output: versions, model, time."""
    import torch
    import transformer_lens

    out: dict[str, Any] = {
        "workbench_version": _version(),
        "torch": torch.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "unknown"),
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if session is not None:
        out["model"] = {"name": session.name, "n_layers": session.n_layers, "d_model": session.d_model,
                        "d_mlp": session.d_mlp, "n_heads": session.n_heads, "d_vocab": session.d_vocab,
                        "device": str(session.device), "dtype": str(session.dtype).replace("torch.", "")}
    out.update(extra)
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ffn-workbench")
    except Exception:
        return "0+unknown"


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    return obj


def write_json(path: str | Path, data: dict) -> Path:
    """Write strict JSON (NaN and inf become null), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2, allow_nan=False), encoding="utf-8")
    return path
