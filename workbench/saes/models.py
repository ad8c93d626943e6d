"""Build an SAE from its config (the architecture name picks the class)."""

from __future__ import annotations

from .base import SAE
from .config import SAEConfig
from .jumprelu import JumpReluSAE
from .relu import ReluSAE
from .topk import TopKSAE

__all__ = ["make_sae", "SAE_CLASSES"]

SAE_CLASSES: dict[str, type[SAE]] = {"relu": ReluSAE, "topk": TopKSAE, "jumprelu": JumpReluSAE}


def make_sae(cfg: SAEConfig | None = None, **kwargs) -> SAE:
    """`make_sae(SAEConfig(...))` or `make_sae(architecture="topk", d_in=576, d_sae=9216, k=32)`."""
    cfg = cfg if cfg is not None else SAEConfig(**kwargs)
    return SAE_CLASSES[cfg.architecture](cfg)
