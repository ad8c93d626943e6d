"""Lenses that read the residual stream in the vocabulary: logit, tuned and Jacobian.

    from workbench.lenses import lens, load_lens, train_tuned_lens, fit_jacobian_lens, lens_kl
    logits = lens(s, resid, layer=10, kind="tuned")        # resid = resid_post of block 10
    logits = direction_logits(s, v, layer=10, lens="tuned")  # v written in block 10: linear part
"""

from ._common import (
    LENS_KINDS,
    LensKL,
    LensReader,
    LogitReader,
    as_reader,
    direction_logits,
    kind_of,
    lens,
    lens_kl,
    load_lens,
)
from ._store import LensModelMismatch, LensNotFound, default_path
from .jacobian import JLens, estimate_jacobian_seconds, fit_jacobian_lens, load_jacobian_lens
from .tuned import (
    TunedLens,
    TunedLensConfig,
    estimate_tuned_seconds,
    init_tuned_lens,
    load_tuned_lens,
    train_tuned_lens,
)

__all__ = ["LENS_KINDS", "LensKL", "LensReader", "LogitReader", "as_reader", "direction_logits", "kind_of", "lens",
           "lens_kl", "load_lens", "LensModelMismatch",
           "LensNotFound", "default_path", "JLens", "fit_jacobian_lens", "load_jacobian_lens",
           "TunedLens", "TunedLensConfig", "init_tuned_lens", "load_tuned_lens", "train_tuned_lens",
           "estimate_tuned_seconds", "estimate_jacobian_seconds"]
