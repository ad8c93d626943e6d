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
from ..saes.circuits import top_heads
from ..saes.tasks import CircuitTask
from ..session import Session
from .faithfulness import spearman
from .live import FROZEN_PARTS, live_pass

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


def _answer_weights(correct: Sequence[int], wrong: Sequence[int]) -> dict[int, float]:
    """M = mean logit(correct) - mean logit(wrong) as {token id: weight} (one backward pass)."""
    if not correct or not wrong:
        raise WorkbenchError("each pair needs at least one correct and one wrong answer id")
    weights: dict[int, float] = {}
    for ids, sign in ((correct, 1.0), (wrong, -1.0)):
        for t in ids:
            weights[int(t)] = weights.get(int(t), 0.0) + sign / len(ids)
    return weights


def _z_sites(session: Session) -> list[Site]:
    return [Site("attn_z", layer) for layer in range(session.n_layers)]


@torch.no_grad()
def _corrupt_run(session: Session, ids: list[int], weights: dict[int, float]) -> tuple[dict[Site, Tensor], float]:
    """Every head's z [P head d_head] on the corrupt prompt, and M there (one forward)."""
    z: dict[Site, Tensor] = {}

    def grab(st):
        def fn(act, hook=None):
            z[st] = act.detach()[0]
        return fn

    with session.hooks([(st.hook_name, grab(st)) for st in _z_sites(session)]):
        lg = session.model(torch.tensor([ids], device=session.device), return_type="logits")[0, -1].float()
    return z, float(sum(w * lg[t] for t, w in weights.items()))


def _estimate(session: Session, ids: list[int], weights: dict[int, float], z_x: dict[Site, Tensor],
              frozen: Sequence[str]) -> tuple[Float[Tensor, "L H"], float]:
    """(sum over positions of (z_corrupt - z_clean) . dM/dz per head, M clean): one clean pass."""
    lp = live_pass(session, ids, weights, None, _z_sites(session), frozen)
    est = torch.stack([((z_x[st] - lp.values[st]).float() * lp.grads[st]).sum(dim=(0, 2)) for st in _z_sites(session)])
    return est, float(sum(w * lp.logits[t] for t, w in weights.items()))


def _pair_ids(session: Session, clean: str, corrupt: str) -> tuple[list[int], list[int]]:
    ci, xi = session.encode(clean), session.encode(corrupt)
    if len(ci) != len(xi):
        raise ShapeError(f"clean prompt {clean!r} has {len(ci)} tokens and corrupt {corrupt!r} has {len(xi)}; "
                         "pairs must align")
    return ci, xi


def head_effects(session: Session, clean: str, corrupt: str, correct: Sequence[int], wrong: Sequence[int],
                 frozen: Sequence[str] = ()) -> tuple[Float[Tensor, "L H"], float, float]:
    """(estimated change of M per head [L H] when its z is patched from `corrupt` into `clean`,
    M clean, M corrupt), M = mean logit(correct) - mean logit(wrong) at the last position: one
    corrupt forward, one clean forward and backward."""
    ci, xi = _pair_ids(session, clean, corrupt)
    weights = _answer_weights(correct, wrong)
    z_x, m_x = _corrupt_run(session, xi, weights)
    est, m_c = _estimate(session, ci, weights, z_x, frozen)
    return est, m_c, m_x


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
        ci, xi = _pair_ids(session, clean, corrupt)
        weights = _answer_weights(c, w)
        z_x, m_x = _corrupt_run(session, xi, weights)           # shared by both estimates
        e_live, m_c = _estimate(session, ci, weights, z_x, ())
        e_frozen, _ = _estimate(session, ci, weights, z_x, FROZEN_PARTS)
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
