"""Lenses that read the residual stream in the vocabulary: logit, tuned and Jacobian.

    from workbench.lenses import lens, load_lens, train_tuned_lens, fit_jacobian_lens, lens_kl
    logits = lens(s, resid, layer=10, kind="tuned")        # resid = resid_post of block 10
"""

from ._common import LENS_KINDS, LensKL, LogitReader, lens, lens_kl, load_lens
from ._store import LensModelMismatch, LensNotFound, default_path
from .jacobian import JLens, fit_jacobian_lens, load_jacobian_lens
from .tuned import TunedLens, TunedLensConfig, init_tuned_lens, load_tuned_lens, train_tuned_lens

__all__ = ["LENS_KINDS", "LensKL", "LogitReader", "lens", "lens_kl", "load_lens", "LensModelMismatch",
           "LensNotFound", "default_path", "JLens", "fit_jacobian_lens", "load_jacobian_lens",
           "TunedLens", "TunedLensConfig", "init_tuned_lens", "load_tuned_lens", "train_tuned_lens"]
