"""Attention heads of a contrastive circuit, by attribution patching, against patching itself.

An FFN-unit graph holds attention fixed, so its heads are not nodes; on IOI the mechanism is
heads (name movers, S-inhibition), and the project's ground truth for a task is patching each
head's output z from the corrupt run into the clean one (`saes.circuits.head_patching_importance`,
the normalised drop of the logit difference). Attribution patching estimates every head's
patching effect from one clean backward and one corrupt forward:

    effect_h ~= sum_pos (z_corrupt[pos, h] - z_clean[pos, h]) . dM/dz_h[pos]

with M = logit(correct) - mean logit(wrong) at the last position; `live` takes the gradient in
the real model, `frozen` with attention patterns, norm scales and gates held (the graph's own
frozen model). `head_importance` returns both, normalised like the ground truth, and
`compare_heads` scores a ranking against it (top-k precision / recall, Spearman over all heads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..errors import ShapeError, WorkbenchError
from ..hooks import Site
from ..saes.tasks import CircuitTask
from ..session import Session
from .faithfulness import spearman
from .live import FROZEN_PARTS, live_gradients

__all__ = ["HeadImportance", "HeadComparison", "head_effects", "head_importance", "compare_heads", "top_heads"]


@dataclass(frozen=True)
class HeadImportance:
    """Estimated patching effect of every head, normalised like the ground truth.

    Args:
        live, frozen: [L H] mean over pairs of -(estimated change of M) / (M_clean - M_corrupt):
            the share of the clean - corrupt logit difference that patching the head is
            estimated to remove (real-model gradient / frozen-model gradient).
        ld_clean, ld_corrupt: mean logit differences of the clean and corrupt prompts.
        n_pairs: prompt pairs used. seconds: wall time.
    """

    live: Float[Tensor, "L H"]
    frozen: Float[Tensor, "L H"]
    ld_clean: float
    ld_corrupt: float
    n_pairs: int
    seconds: float


@dataclass(frozen=True)
class HeadComparison:
    """A head ranking against the ground truth: top-k by |score| of each, their overlap."""

    k: int
    predicted: tuple[tuple[int, int], ...]
    true: tuple[tuple[int, int], ...]
    precision: float
    recall: float
    spearman: float


def top_heads(scores: Float[Tensor, "L H"], k: int) -> tuple[tuple[int, int], ...]:
    """The k heads of largest |score|, as (layer, head), largest first."""
    H = scores.shape[1]
    idx = scores.abs().flatten().argsort(descending=True)[:k]
    return tuple((int(i) // H, int(i) % H) for i in idx)


def compare_heads(scores: Float[Tensor, "L H"], truth: Float[Tensor, "L H"], k: int = 10) -> HeadComparison:
    """Top-k heads of `scores` against the top-k of `truth` (by |value|); precision = recall =
    overlap / k when both lists have k heads; Spearman of the two over all heads."""
    if scores.shape != truth.shape:
        raise ShapeError(f"scores {tuple(scores.shape)} and truth {tuple(truth.shape)} differ; both are [layers heads]")
    if not 1 <= k <= scores.numel():
        raise WorkbenchError(f"k={k} is out of range; valid 1..{scores.numel()}")
    pred, true = top_heads(scores, k), top_heads(truth, k)
    hit = len(set(pred) & set(true))
    return HeadComparison(k, pred, true, hit / len(pred), hit / len(true),
                          spearman(scores.flatten().double(), truth.flatten().double()))


def _metric_ids(correct: Sequence[int], wrong: Sequence[int]) -> tuple[list[int], list[int]]:
    if not correct or not wrong:
        raise WorkbenchError("each pair needs at least one correct and one wrong answer id")
    return list(correct), list(wrong)


def head_effects(session: Session, clean: str, corrupt: str, correct: Sequence[int], wrong: Sequence[int],
                 frozen: Sequence[str] = ()) -> tuple[Float[Tensor, "L H"], float, float]:
    """(estimated change of M per head [L H] when its z is patched from `corrupt` into `clean`,
    M clean, M corrupt), M = mean logit(correct) - mean logit(wrong) at the last position."""
    ci, xi = session.encode(clean), session.encode(corrupt)
    if len(ci) != len(xi):
        raise ShapeError(f"clean prompt {clean!r} has {len(ci)} tokens and corrupt {corrupt!r} has {len(xi)}; "
                         "pairs must align")
    c, w = _metric_ids(correct, wrong)
    L = session.n_layers
    sites = [Site("attn_z", layer) for layer in range(L)]
    z_x: dict[int, Tensor] = {}
    z_c: dict[int, Tensor] = {}
    with torch.no_grad(), session.hooks([(s.hook_name, _grab(z_x, s.layer)) for s in sites]):
        lx = session.model(torch.tensor([xi], device=session.device), return_type="logits")[0, -1].float()
    with torch.no_grad(), session.hooks([(s.hook_name, _grab(z_c, s.layer)) for s in sites]):
        lc = session.model(torch.tensor([ci], device=session.device), return_type="logits")[0, -1].float()
    # M = mean_c logit - mean_w logit = sum over ids with weights: one backward per weighted id set
    grads = _weighted_grads(session, ci, c, w, sites, frozen)
    est = torch.stack([((z_x[s.layer] - z_c[s.layer]).float() * grads[s]).sum(dim=(0, 2)) for s in sites])
    m_c = float(lc[c].mean() - lc[w].mean())
    m_x = float(lx[c].mean() - lx[w].mean())
    return est, m_c, m_x


def _grab(store: dict, layer: int):
    def fn(act, hook=None):
        store[layer] = act.detach()[0]
    return fn


def _weighted_grads(session: Session, ids: list[int], correct: list[int], wrong: list[int],
                    sites: list[Site], frozen: Sequence[str]) -> dict[Site, Tensor]:
    """dM/dz at every site for M = mean logit(correct) - mean logit(wrong), one backward pass."""
    weights: dict[int, float] = {}
    for t in correct:
        weights[t] = weights.get(t, 0.0) + 1.0 / len(correct)
    for t in wrong:
        weights[t] = weights.get(t, 0.0) - 1.0 / len(wrong)
    return live_gradients(session, ids, weights, None, sites, frozen)


def head_importance(session: Session, task: CircuitTask, n: int | None = None, progress: bool = True
                    ) -> HeadImportance:
    """Attribution-patching estimate of every head's patching effect on `task` (first `n` pairs),
    live and frozen, normalised as `head_patching_importance`: mean over pairs of the estimated
    drop of M, divided by mean M_clean - mean M_corrupt."""
    import time

    t0 = time.perf_counter()
    pairs = list(zip(task.clean, task.corrupt, task.correct, task.wrong))[: n if n is not None else len(task)]
    if not pairs:
        raise WorkbenchError(f"task {task.name!r} has no prompt pairs (n={n})")
    L, H = session.n_layers, session.n_heads
    live, frozen = torch.zeros(L, H), torch.zeros(L, H)
    mc, mx = [], []
    for clean, corrupt, c, w in tqdm(pairs, desc=f"head attribution ({task.name})", disable=not progress,
                                     leave=False):
        e_live, m_c, m_x = head_effects(session, clean, corrupt, c, w)
        e_frozen, _, _ = head_effects(session, clean, corrupt, c, w, FROZEN_PARTS)
        live += e_live.cpu()
        frozen += e_frozen.cpu()
        mc.append(m_c)
        mx.append(m_x)
    k = len(pairs)
    ld_c, ld_x = sum(mc) / k, sum(mx) / k
    denom = ld_c - ld_x if abs(ld_c - ld_x) > 1e-6 else 1.0
    # ground truth: (ld_clean - ld_patched) / denom, i.e. minus the change, normalised
    live, frozen = -live / k / denom, -frozen / k / denom
    if not (torch.isfinite(live).all() and torch.isfinite(frozen).all()) or math.isnan(denom):
        raise WorkbenchError("head attribution produced non-finite scores; check the task's prompts")
    return HeadImportance(live, frozen, ld_c, ld_x, k, time.perf_counter() - t0)
