"""z* targets on disk, per request: a batch edit cut short resumes, a rerun reuses them.

MEMIT's and AlphaEdit's first step (`editing.zstar.target_residuals`) costs nearly all of a
large batch's edit time (about 0.13 s per request for SmolLM2-135M in float32 on an H200), and
it does not depend on what follows it (lam, the preserved keys, repair rounds of other
requests). With a `ZCache`, every chunk of requests is written as soon as it is optimised, and
requests already there are not optimised again.

A *context* names a directory under the cache's root: a SHA-256 of every model parameter
(the weights as they are now, edits included), the layer the targets live at, the z* settings
(steps, lr, kl_factor, weight_decay, clamp, stop_nll), the weights' dtype and the device kind.
Each chunk is one safetensors file there holding z, h0 [m d_model], nll, steps [m] and, in its
metadata, the requests' keys: a SHA-1 of the rows the optimisation runs (each prompt's token ids
and subject position, the essence prompt's, the target ids). A request's delta is optimised
independently of the others in its chunk (`editing.zstar`), so a cached z equals a fresh one up
to floating-point summation order. Naming the context reads every parameter once per batch
(about a second per GB of weights: negligible for SmolLM2, some seconds at 8B), which is why
the cache is opt-in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from workbench.errors import WorkbenchError
from workbench.session import Session

from ._prompts import SubjectPrompt
from .ledger import params_hash

log = logging.getLogger(__name__)

__all__ = ["ZCache", "ZStore", "request_key", "Z_FIELDS"]

Z_FIELDS = ("steps", "lr", "kl_factor", "weight_decay", "clamp", "stop_nll")


def request_key(prompts: Sequence[SubjectPrompt], essence: SubjectPrompt, target: Sequence[int]) -> str:
    """SHA-1 of what one request's z* optimisation runs on."""
    rows = [[list(sp.ids), sp.last] for sp in prompts] + [[list(essence.ids), essence.last], list(target)]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()


class ZCache:
    """Root directory of cached z* targets (`ZStore` per context).

    Args:
        directory: where the contexts' directories go (created on demand).
    """

    def __init__(self, directory: str | os.PathLike):
        self.root = Path(directory)
        if self.root.exists() and not self.root.is_dir():
            raise WorkbenchError(f"z* cache {str(self.root)!r} is a file; give a directory")

    def store(self, session: Session, layer: int, cfg) -> ZStore:
        """The store of `session`'s current weights, targets at `layer`, settings of `cfg`."""
        missing = [f for f in Z_FIELDS if not hasattr(cfg, f)]
        if missing:
            raise WorkbenchError(f"{type(cfg).__name__} has no z* setting {missing}")
        dtype = next(session.hf_model.parameters()).dtype
        parts = [params_hash(session, [name for name, _ in session.hf_model.named_parameters()]), str(int(layer)), str(dtype), session.device.type,
                 *(f"{f}={getattr(cfg, f)!r}" for f in Z_FIELDS)]
        ctx = hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
        return ZStore(self.root / f"zstar-{ctx}")

    def __repr__(self) -> str:
        return f"ZCache({str(self.root)!r})"


class ZStore:
    """The cached targets of one context (`ZCache.store`)."""

    def __init__(self, directory: Path):
        self.dir = directory

    def load(self, keys: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float, int]]:
        """key -> (z [d_model], h0 [d_model], nll, steps) for the `keys` stored here."""
        want = set(keys)
        out: dict = {}
        if not self.dir.is_dir() or not want:
            return out
        for f in sorted(self.dir.glob("*.safetensors")):
            try:
                with safe_open(str(f), "pt") as fh:
                    meta = fh.metadata() or {}
                stored = json.loads(meta["keys"])
                if not want.intersection(stored):
                    continue
                t = load_file(str(f))
                z, h0, nll, steps = t["z"], t["h0"], t["nll"], t["steps"]
            except (SafetensorError, KeyError, ValueError, OSError) as e:
                raise WorkbenchError(f"z* cache file {str(f)!r} is unreadable ({e}); delete it or the "
                                     f"directory {str(self.dir)!r} to compute those targets again") from e
            if not (len(stored) == z.shape[0] == h0.shape[0] == nll.shape[0] == steps.shape[0]):
                raise WorkbenchError(f"z* cache file {str(f)!r} holds {len(stored)} keys for {z.shape[0]} "
                                     f"targets; delete it to compute them again")
            for j, k in enumerate(stored):
                if k in want:
                    out[k] = (z[j], h0[j], float(nll[j]), int(steps[j]))
        return out

    def save(self, keys: Sequence[str], z: torch.Tensor, h0: torch.Tensor, nll: Sequence[float],
             steps: Sequence[int]) -> Path:
        """Write one chunk's targets (atomically: a cut run leaves whole files only)."""
        if not (len(keys) == z.shape[0] == h0.shape[0] == len(nll) == len(steps)):
            raise WorkbenchError(f"{len(keys)} keys for {z.shape[0]} targets")
        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:20]
        path = self.dir / f"{name}.safetensors"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"z": z.detach().float().cpu().contiguous(), "h0": h0.detach().float().cpu().contiguous(),
                   "nll": torch.tensor(list(nll), dtype=torch.float64),
                   "steps": torch.tensor(list(steps), dtype=torch.long)},
                  str(tmp), metadata={"keys": json.dumps(list(keys))})
        os.replace(tmp, path)
        return path
