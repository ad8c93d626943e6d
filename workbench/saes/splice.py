"""Splice an SAE into the model while it runs: replace a site's activation by the SAE's output.

    act -> x^            (plain splice: the model sees only the reconstruction)
    act -> x + (x^' - x^) (with `keep_error=True`: the SAE error x - x^ is added back, so an
                          unedited splice is the identity and feature edits act alone)

x^' is the reconstruction after editing codes (ablate, set, scale a feature). Hooks are scoped:
everything is removed when the `with` block ends, also on an exception. Position 0 is left
alone when the SAE was trained with `skip_first_position`.

Example:
    >>> with splice(s, sae, edits=[ablate_feature(123)], keep_error=True):
    ...     s.next_token("The capital of France is")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .._types import Tensor
from ..errors import UnknownSiteError, WorkbenchError, check_index
from ..session import Session
from .config import PER_HEAD_KINDS
from .sites import check_sae_site

__all__ = ["FeatureEdit", "ablate_feature", "set_feature", "steer_feature", "splice",
           "splice_hook", "FeatureOutOfRange"]


class FeatureOutOfRange(WorkbenchError):
    """An SAE latent index outside 0..d_sae-1."""


@dataclass(frozen=True)
class FeatureEdit:
    """Change latent codes f [..., d_sae] before decoding: f_i <- scale * f_i + add."""

    feature: int
    scale: float = 1.0
    add: float = 0.0
    set_to: float | None = None

    def apply(self, codes: Tensor) -> Tensor:
        c = codes[..., self.feature]
        codes[..., self.feature] = (torch.full_like(c, self.set_to) if self.set_to is not None
                                    else c * self.scale + self.add)
        return codes


def ablate_feature(feature: int) -> FeatureEdit:
    """Zero a latent (its decoder direction leaves the reconstruction)."""
    return FeatureEdit(int(feature), scale=0.0)


def set_feature(feature: int, value: float) -> FeatureEdit:
    """Clamp a latent to `value` at every spliced position (steering by the decoder row)."""
    return FeatureEdit(int(feature), set_to=float(value))


def steer_feature(feature: int, amount: float) -> FeatureEdit:
    """Add `amount` to a latent's code: adds amount * d_i to the activation."""
    return FeatureEdit(int(feature), add=float(amount))


def splice_hook(sae, edits: Sequence[FeatureEdit] = (), keep_error: bool = False,
                positions: Sequence[int] | None = None,
                on_codes: Callable[[Tensor], Tensor | None] | None = None):
    """The raw hook function (act, hook) -> new act for the SAE's site.

    `on_codes(codes)` may return replacement codes [batch pos d_sae] (attribution uses this to
    make codes a leaf of the graph).
    """
    cfg = sae.cfg
    per_head = cfg.site.split(":")[0] in PER_HEAD_KINDS

    def fn(act: Tensor, hook=None) -> Tensor:
        x = act[:, :, cfg.head] if per_head and cfg.head is not None else (
            act.reshape(*act.shape[:2], -1) if per_head else act)
        start = 1 if cfg.skip_first_position and x.shape[1] > 1 else 0
        xs = x[:, start:]
        out = sae(xs.to(sae.W_enc.dtype), check=False)
        codes = out.codes
        if on_codes is not None:
            new = on_codes(codes)
            codes = new if new is not None else codes
        if edits:
            codes = codes.clone()
            for e in edits:
                codes = e.apply(codes)
        recon = sae.decode(codes) if (edits or on_codes is not None) else out.recon
        if keep_error:
            recon = recon + (xs.to(recon.dtype) - out.recon)
        if positions is not None:
            sel = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
            sel[list(positions)] = True
            sel = sel[start:][None, :, None]
            recon = torch.where(sel, recon, xs.to(recon.dtype))
        new_x = torch.cat([x[:, :start], recon.to(x.dtype)], 1)
        if per_head and cfg.head is not None:
            act = act.clone()
            act[:, :, cfg.head] = new_x
            return act
        return new_x.reshape(act.shape)

    return fn


@contextlib.contextmanager
def splice(session: Session, sae, edits: Sequence[FeatureEdit] = (), keep_error: bool = False,
           positions: Sequence[int] | None = None) -> Iterator[None]:
    """Run the model with the SAE spliced into its site for the body only (see module doc)."""
    site = check_sae_site(session, sae)
    if site.derived:
        raise UnknownSiteError(f"site {site} is derived (computed from attn_z) and cannot be "
                               "spliced; train the per-head SAE on attn_z to splice it")
    for e in edits:
        check_index(e.feature, sae.d_sae, "feature", FeatureOutOfRange)
    with session.hooks([(site.hook_name, splice_hook(sae, edits, keep_error, positions))]):
        yield
