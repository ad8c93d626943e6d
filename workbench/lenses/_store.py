"""Lens files: safetensors with the model's identity in the metadata, refused for another model.

A lens file records the model name, its shape (d_model, n_layers, d_vocab) and a probe of
its unembedding (W_U[:8, :16]); `check_identity` raises `LensModelMismatch` when a session
differs in any of them (the probe within 1e-2 relative, so a bf16 copy of the same weights
still matches). Default location: ``<workbench cache>/lenses/<model name>/<kind>.safetensors``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import WorkbenchError
from ..session import Session

__all__ = ["LensModelMismatch", "LensNotFound", "identity", "check_identity", "default_path",
           "save_tensors", "load_tensors"]


class LensModelMismatch(WorkbenchError):
    """A lens trained for another model (name, shape or weights differ)."""


class LensNotFound(WorkbenchError):
    """No lens file where one was asked for."""


def identity(session: Session) -> dict:
    """What a lens file records about the model it was trained for."""
    probe = session.W_U.detach()[:8, :16].float().cpu()
    return {"model_name": str(session.name), "d_model": session.d_model, "n_layers": session.n_layers,
            "d_vocab": session.d_vocab, "probe": probe.flatten().tolist()}


def check_identity(meta: dict, session: Session, what: str) -> None:
    """Raise LensModelMismatch naming the first difference between `meta` and `session`."""
    mine = identity(session)
    for key in ("model_name", "d_model", "n_layers", "d_vocab"):
        if meta.get(key) != mine[key]:
            raise LensModelMismatch(
                f"{what} was trained for model {meta.get('model_name')!r} ({key}={meta.get(key)!r}); "
                f"this session is {mine['model_name']!r} ({key}={mine[key]!r}); train one for this model")
    a, b = torch.tensor(meta.get("probe", [])), torch.tensor(mine["probe"])
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-3):
        raise LensModelMismatch(f"{what} was trained for {meta.get('model_name')!r} with different "
                                "weights (unembedding probe differs); train one for this model")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def default_path(session: Session, kind: str) -> Path:
    from ..models import cache_root

    return cache_root() / "lenses" / _slug(str(session.name)) / f"{kind}.safetensors"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"workbench": json.dumps(meta)})
    return path


def load_tensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LensNotFound(f"{what} file {str(path)!r} does not exist; train and save one first")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("workbench", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if not meta:
        raise LensNotFound(f"{str(path)!r} is not a workbench lens file (no metadata)")
    return tensors, meta
