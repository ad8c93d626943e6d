"""Where an SAE reads: its site as vectors [batch pos d_in], and the check that widths match.

Per-head sites (``attn_z`` [b p head d_head], ``head_out`` [b p head d_model]) give one head's
vector when `head` is set, else all heads concatenated ([b p head*width]).
"""

from __future__ import annotations

from ..errors import ShapeError
from ..hooks import Site, parse_site
from ..session import Session
from .config import PER_HEAD_KINDS, SAEConfig

__all__ = ["sae_site", "site_d_in", "to_vectors", "check_sae_site"]


def sae_site(cfg: SAEConfig) -> Site:
    if not cfg.site:
        raise ShapeError("this SAE has no site (cfg.site is empty); set SAEConfig.site, e.g. 'resid_post:15'")
    return parse_site(cfg.site)


def site_d_in(session: Session, site: Site, head: int | None = None) -> int:
    """Width of the vectors an SAE on `site` (and `head`) reads, for this model."""
    site.check(session)
    width = site.width(session)
    if site.kind in PER_HEAD_KINDS:
        if head is None:
            return width * session.n_heads
        session.check_head(site.layer, head)
    return width


def to_vectors(act, site: Site, head: int | None):
    """The captured activation of `site` as [batch pos d_in]."""
    if site.kind in PER_HEAD_KINDS:
        if head is not None:
            return act[:, :, head]
        return act.reshape(*act.shape[:2], -1)
    return act


def check_sae_site(session: Session, sae) -> Site:
    """Raise ShapeError unless the SAE's d_in equals its site's width for `session`'s model."""
    site = sae_site(sae.cfg)
    want = site_d_in(session, site, sae.cfg.head)
    if sae.cfg.d_in != want:
        head = f" head {sae.cfg.head}" if sae.cfg.head is not None else ""
        raise ShapeError(f"SAE d_in={sae.cfg.d_in} does not match site {site}{head} of model "
                         f"{session.name!r}, whose vectors have width {want}")
    return site
