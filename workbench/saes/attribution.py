"""Sparse feature circuits (Marks et al. 2024): attribution patching over SAE features.

Every SAE is spliced with its error term, x = x^(f) + (x - x^(f)), so the clean model's outputs
are unchanged and each feature f_i is a node. With a metric m (logit difference at the last
token, summed over prompts), the effect of moving feature i from its clean to its patched value
is estimated to first order:

    IE_i ~= sum_pos (f_i^patch - f_i^clean)[pos] * dm/df_i[pos]        (one backward pass)

f^patch is the feature's value on the corrupt prompt (or 0 for zero ablation). Gradients are
total: upstream features act through downstream SAEs and error terms. `verify` patches the top
features one at a time for real and reports both numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ShapeError, WorkbenchError
from ..session import Session
from .sites import check_sae_site
from .splice import splice_hook

__all__ = ["FeatureEffect", "AttributionResult", "attribution_patching", "real_patch_effect",
           "verify"]


@dataclass(frozen=True)
class FeatureEffect:
    """One feature node: which SAE (index into the list), which latent, estimated effect."""

    sae_index: int
    site: str
    feature: int
    attribution: float
    real: float | None = None


@dataclass(frozen=True)
class AttributionResult:
    """Per SAE: effects [d_sae] (mean over prompts), and the top features overall."""

    metric_clean: float
    metric_patched: float
    effects: tuple[torch.Tensor, ...]
    top: tuple[FeatureEffect, ...]


def _metric(logits, last, correct, wrong):
    rows = logits[torch.arange(len(last), device=logits.device), last.to(logits.device)].float()
    return rows.gather(1, correct.to(rows.device)[:, None])[:, 0] - rows.gather(1, wrong.to(rows.device)[:, None])[:, 0]


@contextlib.contextmanager
def _spliced(session: Session, saes, on_codes_list):
    hooks = []
    for sae, oc in zip(saes, on_codes_list):
        site = check_sae_site(session, sae)
        hooks.append((site.hook_name, splice_hook(sae, keep_error=True, on_codes=oc)))
    with session.hooks(hooks):
        yield


def _codes(session: Session, saes, tokens):
    store: list[torch.Tensor | None] = [None] * len(saes)

    def keep(i):
        def fn(c):
            store[i] = c.detach()
        return fn

    with torch.no_grad(), _spliced(session, saes, [keep(i) for i in range(len(saes))]):
        logits = session.model(tokens, return_type="logits")
    return store, logits


def _prep(session: Session, clean, corrupt, correct, wrong):
    cb = session.tokenize(list(clean))
    xb = session.tokenize(list(corrupt)) if corrupt is not None else None
    if xb is not None and not torch.equal(cb.lengths, xb.lengths):
        raise ShapeError("clean and corrupt prompts must have the same token lengths pairwise; "
                         f"got {cb.lengths.tolist()} and {xb.lengths.tolist()}")
    ids = torch.as_tensor([session.token_id(t) for t in correct])
    wid = torch.as_tensor([session.token_id(t) for t in wrong])
    if len(ids) != len(cb) or len(wid) != len(cb):
        raise ShapeError(f"give one correct and one wrong answer per prompt ({len(cb)} prompts)")
    return cb, xb, ids, wid


def attribution_patching(session: Session, saes: Sequence, clean: Sequence[str], correct: Sequence[str],
                         wrong: Sequence[str], corrupt: Sequence[str] | None = None,
                         top: int = 20) -> AttributionResult:
    """Attribution of m = logit(correct) - logit(wrong) to each SAE feature (see module doc)."""
    cb, xb, ids, wid = _prep(session, clean, corrupt, correct, wrong)
    if xb is not None:
        patch_codes, plog = _codes(session, saes, xb.tokens)
        m_patch = _metric(plog, xb.last, ids, wid).mean().item()
    else:
        patch_codes, m_patch = None, float("nan")
    leaves: list[torch.Tensor | None] = [None] * len(saes)
    clean_codes: list[torch.Tensor | None] = [None] * len(saes)

    def leaf(i):
        def fn(c):
            clean_codes[i] = c.detach()
            leaves[i] = torch.zeros_like(c, requires_grad=True)
            return c + leaves[i]
        return fn

    with torch.enable_grad(), _spliced(session, saes, [leaf(i) for i in range(len(saes))]):
        logits = session.model(cb.tokens, return_type="logits")
        m = _metric(logits, cb.last, ids, wid)
        done = [(x, c) for x, c in zip(leaves, clean_codes) if x is not None and c is not None]
        if len(done) != len(saes):
            missed = [i for i, x in enumerate(leaves) if x is None]
            raise WorkbenchError(f"the splice hooks of SAEs {missed} did not run in the forward pass")
        grads = torch.autograd.grad(m.sum(), [x for x, _ in done], allow_unused=True)
    mask = cb.mask[..., None].to(logits.device)
    effects, cands = [], []
    for i, (sae, g, (_, fc)) in enumerate(zip(saes, grads, done)):
        start = 1 if sae.cfg.skip_first_position and cb.tokens.shape[1] > 1 else 0
        fp = patch_codes[i] if patch_codes is not None else torch.zeros_like(fc)
        g = torch.zeros_like(fc) if g is None else g
        eff = ((fp - fc) * g * mask[:, start:]).sum(1).mean(0).cpu()  # [d_sae]
        effects.append(eff)
        v, idx = eff.abs().topk(min(top, eff.numel()))
        cands += [FeatureEffect(i, sae.cfg.site, int(j), float(eff[j])) for j in idx]
    cands.sort(key=lambda e: -abs(e.attribution))
    return AttributionResult(m.mean().item(), m_patch, tuple(effects), tuple(cands[:top]))


@torch.no_grad()
def real_patch_effect(session: Session, saes: Sequence, sae_index: int, feature: int, clean, correct,
                      wrong, corrupt=None) -> float:
    """m(feature patched to its corrupt value, or 0) - m(clean), all SAEs spliced with errors."""
    cb, xb, ids, wid = _prep(session, clean, corrupt, correct, wrong)
    patch_codes = _codes(session, saes, xb.tokens)[0] if xb is not None else None
    _, base = _codes(session, saes, cb.tokens)
    m0 = _metric(base, cb.last, ids, wid).mean().item()

    def edit(c):
        c = c.clone()
        c[..., feature] = patch_codes[sae_index][..., feature] if patch_codes is not None else 0.0
        return c

    ocs = [edit if i == sae_index else None for i in range(len(saes))]
    with _spliced(session, saes, ocs):
        logits = session.model(cb.tokens, return_type="logits")
    return _metric(logits, cb.last, ids, wid).mean().item() - m0


def verify(session: Session, saes, result: AttributionResult, clean, correct, wrong, corrupt=None,
           n: int = 5) -> tuple[FeatureEffect, ...]:
    """Real patching of the top `n` features; returns them with `real` filled in."""
    out = []
    for e in result.top[:n]:
        r = real_patch_effect(session, saes, e.sae_index, e.feature, clean, correct, wrong, corrupt)
        out.append(FeatureEffect(e.sae_index, e.site, e.feature, e.attribution, r))
    return tuple(out)
