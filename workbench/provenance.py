"""Provenance and strict JSON: what every JSON output of the workbench carries and how it is written.

`meta(session)` records versions, the model and the time; `write_json` writes strict JSON
(NaN and inf become null). Used by the command line, the batteries and the Ray jobs alike.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from .session import Session

__all__ = ["meta", "write_json", "package_version"]


def meta(session: Session | None = None, **extra) -> dict[str, Any]:
    """Provenance stored in every JSON output: versions, model, time."""
    import torch

    out: dict[str, Any] = {
        "workbench_version": _version(),
        "torch": torch.__version__,
        "transformer_lens": package_version("transformer-lens"),
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if session is not None:
        out["model"] = {"name": session.name, "n_layers": session.n_layers, "d_model": session.d_model,
                        "d_mlp": session.d_mlp, "n_heads": session.n_heads, "d_vocab": session.d_vocab,
                        "device": str(session.device), "dtype": str(session.dtype).replace("torch.", "")}
    out.update(extra)
    return out


def package_version(dist: str) -> str:
    """The installed version of distribution `dist` ("unknown" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _version() -> str:
    v = package_version("ffn-workbench")
    return "0+unknown" if v == "unknown" else v


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
