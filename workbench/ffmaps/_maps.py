"""Contextualisation maps after each component, and how much the FF block changes them.

Map of a scope s (see `_decompose`): N_s[i, j] = ||v^s_{i<-j}||, the norm of source j's
contribution to the vector at position i; its row-normalised form S_s[i, j] = N_s[i, j] /
sum_{j'} N_s[i, j'] is what the paper renders. Statistics use the cells j <= i of rows i >= 1
(row 0 holds one cell, always 1), of one prompt:

    ff_rho      Spearman rank correlation of S_before and S_ff (the FF's input map, i.e. after
                the pre-FF norm, against its output map); 1 - ff_rho is how much the FF re-ranks
    ff_change   ||S_ff - S_before||_F / ||S_before||_F (norm of the FF's change)
    cancel_rho  Spearman correlation of the FF's change D_FF = S_ff - S_before with the change the
                following components make D_after = S_out - S_ff (residual, and the post-FF
                norm on Gemma); negative = they undo the FF's change (the paper's cancellation)
    ff_retained ||S_out - S_noFF||_F / ||S_ff - S_before||_F, where S_noFF is the map of the
                layer output with the FF removed (the residual h, scope "...+RES" before the
                pre-FF norm): the share of the FF's own change that survives in the layer output

Amplified pairs: cells (i, j), j < i, whose share the FF raises most, gain = S_ff / S_before,
among cells with S_before >= min_share. Source position 0 is left out: it is BOS, or (SmolLM2,
no BOS) the first token, which attention uses as a sink in most layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..errors import EmptyPromptError, ShapeError
from ..session import Session
from ._decompose import LayerDecomposition, decompose_all

__all__ = ["AmplifiedPair", "LayerMaps", "FFMaps", "FFChangeSummary", "ffmaps", "ff_change_summary",
           "layer_maps", "row_shares"]


def row_shares(maps: Float[Tensor, "... qpos kpos"]) -> Float[Tensor, "... qpos kpos"]:
    """Row-normalise norm maps: S[i, j] = N[i, j] / sum_j' N[i, j']."""
    return maps / maps.sum(-1, keepdim=True).clamp_min(1e-30)


@dataclass(frozen=True)
class AmplifiedPair:
    """A token pair whose mixing the FF block amplifies: query i reads source j."""

    layer: int
    prompt: int
    i: int
    j: int
    query: str
    source: str
    share_before: float
    share_after: float
    gain: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LayerMaps:
    """Norm-based maps of one layer on one prompt, with the FF statistics (module docstring).

    Args:
        layer, scopes: the block and its scope names ("ATB", "ATB+RES", ...).
        maps: [scope i j] N_s (unnormalised norms). head_maps: [head i j] per-head ATB norms.
        errors: [scope] max over positions of the relative error of sum_j v_{i<-j} vs the model.
        ff_scope: index of the FF output in `scopes`.
        ff_rho, ff_change, cancel_rho, ff_retained: see the module docstring.
    """

    layer: int
    scopes: tuple[str, ...]
    maps: Float[Tensor, "scope qpos kpos"]
    head_maps: Float[Tensor, "head qpos kpos"]
    errors: tuple[float, ...]
    ff_scope: int
    ff_rho: float
    ff_change: float
    cancel_rho: float
    ff_retained: float

    @property
    def shares(self) -> Float[Tensor, "scope qpos kpos"]:
        return row_shares(self.maps)

    def scope(self, name: str) -> Float[Tensor, "qpos kpos"]:
        if name not in self.scopes:
            raise ShapeError(f"scope={name!r} is not one of {list(self.scopes)}")
        return self.maps[self.scopes.index(name)]

    def to_dict(self, maps: bool = True) -> dict:
        d = {"layer": self.layer, "scopes": list(self.scopes), "errors": list(self.errors),
             "ff_scope": self.ff_scope, "ff_rho": self.ff_rho, "ff_change": self.ff_change,
             "cancel_rho": self.cancel_rho, "ff_retained": self.ff_retained}
        if maps:
            d["maps"] = np.round(self.maps.numpy(), 5).tolist()
            d["head_maps"] = np.round(self.head_maps.numpy(), 5).tolist()
        return d


def _cells(n: int) -> tuple[Tensor, Tensor]:
    idx = torch.tril_indices(n, n)
    keep = idx[0] >= 1
    return idx[0][keep], idx[1][keep]


def _rho(a: Tensor, b: Tensor) -> float:
    if len(a) < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def layer_maps(d: LayerDecomposition) -> LayerMaps:
    """Maps and FF statistics of one `LayerDecomposition`."""
    maps = d.parts.norm(dim=-1).float().cpu()
    S = row_shares(maps)
    n = maps.shape[-1]
    ii, jj = _cells(n)
    f = d.ff_scope
    before, ff, out, noff = S[f - 1, ii, jj], S[f, ii, jj], S[-1, ii, jj], S[f - 2, ii, jj]
    d_ff, d_after = ff - before, out - ff
    norm_ff = float(d_ff.norm())
    errors = d.relative_errors().amax(-1).float().cpu()
    return LayerMaps(
        layer=d.layer, scopes=d.scopes, maps=maps, head_maps=d.head_norms.float().cpu(),
        errors=tuple(errors.tolist()), ff_scope=f,
        ff_rho=_rho(before, ff),
        ff_change=norm_ff / max(float(before.norm()), 1e-30),
        cancel_rho=_rho(d_ff, d_after),
        ff_retained=float((out - noff).norm()) / max(norm_ff, 1e-30),
    )


def _pairs(lm: LayerMaps, str_tokens, prompt: int, min_share: float, skip_first: bool,
           top: int) -> list[AmplifiedPair]:
    S = lm.shares
    before, after = S[lm.ff_scope - 1], S[lm.ff_scope]
    n = before.shape[0]
    idx = torch.tril_indices(n, n, offset=-1)
    ii, jj = idx[0], idx[1]
    keep = before[ii, jj] >= min_share
    if skip_first:
        keep &= jj >= 1
    ii, jj = ii[keep], jj[keep]
    gain = after[ii, jj] / before[ii, jj]
    order = gain.argsort(descending=True)[:top]
    return [AmplifiedPair(lm.layer, prompt, int(ii[k]), int(jj[k]), str_tokens[int(ii[k])],
                          str_tokens[int(jj[k])], float(before[ii[k], jj[k]]),
                          float(after[ii[k], jj[k]]), float(gain[k])) for k in order]


@dataclass(frozen=True)
class FFMaps:
    """Maps of every requested layer on one prompt, with the most amplified pairs.

    Args:
        prompt, str_tokens: the input. layers: one `LayerMaps` per layer.
        pairs: the `top` amplified pairs over all layers, largest gain first.
        steps, rule: integrated-gradients quadrature of the FF split.
    """

    prompt: str
    str_tokens: tuple[str, ...]
    layers: tuple[LayerMaps, ...]
    pairs: tuple[AmplifiedPair, ...]
    steps: int
    rule: str

    def layer(self, layer: int) -> LayerMaps:
        for lm in self.layers:
            if lm.layer == layer:
                return lm
        raise ShapeError(f"layer={layer} was not computed; layers are {[x.layer for x in self.layers]}")

    def to_dict(self, maps: bool = True) -> dict:
        return {"prompt": self.prompt, "str_tokens": list(self.str_tokens), "steps": self.steps,
                "rule": self.rule, "layers": [lm.to_dict(maps) for lm in self.layers],
                "pairs": [p.to_dict() for p in self.pairs]}


def ffmaps(session: Session, prompt: str, layers: Sequence[int] | None = None, steps: int = 64,
           rule: str = "midpoint", top: int = 10, min_share: float = 0.01) -> FFMaps:
    """Contextualisation maps after each component of each layer, and the FF statistics.

    Example:
        >>> r = ffmaps(s, "The Eiffel Tower is in Paris", layers=[3])
        >>> r.layer(3).ff_rho, r.pairs[0].query, r.pairs[0].source
    """
    if not 0 <= min_share < 1:
        raise ShapeError(f"min_share={min_share} must be in [0, 1)")
    out, pairs, toks = [], [], ()
    for d in decompose_all(session, prompt, layers, steps, rule):
        lm = layer_maps(d)
        toks = d.str_tokens
        out.append(lm)
        pairs += _pairs(lm, toks, 0, min_share, True, top)
    pairs.sort(key=lambda p: -p.gain)
    return FFMaps(prompt, toks, tuple(out), tuple(pairs[:top]), steps, rule)


@dataclass(frozen=True)
class FFChangeSummary:
    """Per-layer FF statistics averaged over prompts (NaNs skipped), with amplified pairs.

    Args:
        prompts: the inputs. layers: the blocks. ff_rho, ff_change, cancel_rho, ff_retained:
            [layer] means over prompts (module docstring). pairs: top pairs over all prompts.
    """

    prompts: tuple[str, ...]
    layers: tuple[int, ...]
    ff_rho: tuple[float, ...]
    ff_change: tuple[float, ...]
    cancel_rho: tuple[float, ...]
    ff_retained: tuple[float, ...]
    max_error_no_ff: float
    max_error_ff: float
    pairs: tuple[AmplifiedPair, ...]

    def rows(self) -> list[dict]:
        return [{"layer": a, "ff_rho": b, "ff_change": c, "cancel_rho": e, "ff_retained": f}
                for a, b, c, e, f in zip(self.layers, self.ff_rho, self.ff_change, self.cancel_rho,
                                         self.ff_retained)]

    def to_dict(self) -> dict:
        return {"prompts": list(self.prompts), "rows": self.rows(),
                "max_error_no_ff": self.max_error_no_ff, "max_error_ff": self.max_error_ff,
                "pairs": [p.to_dict() for p in self.pairs]}


def ff_change_summary(session: Session, prompts: Sequence[str], layers: Sequence[int] | None = None,
                      steps: int = 64, rule: str = "midpoint", top: int = 10,
                      min_share: float = 0.01) -> FFChangeSummary:
    """`ffmaps` statistics over several prompts (e.g. WikiText sentences), per layer."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise EmptyPromptError("prompts=[] is empty; give at least one prompt")
    stats: dict[int, list[tuple[float, ...]]] = {}
    pairs: list[AmplifiedPair] = []
    err_no, err_ff = 0.0, 0.0
    for k, p in enumerate(tqdm(prompts, desc="ffmaps", disable=len(prompts) < 2)):
        for d in decompose_all(session, p, layers, steps, rule):
            lm = layer_maps(d)
            stats.setdefault(lm.layer, []).append((lm.ff_rho, lm.ff_change, lm.cancel_rho, lm.ff_retained))
            err_ff = max(err_ff, lm.errors[lm.ff_scope])
            err_no = max([err_no] + list(lm.errors[: lm.ff_scope]))
            pairs += _pairs(lm, d.str_tokens, k, min_share, True, top)
    pairs.sort(key=lambda q: -q.gain)
    L = sorted(stats)
    mean = np.array([np.nanmean(np.array(stats[x], dtype=float), 0) for x in L])
    ff_rho, ff_change, cancel_rho, ff_retained = (tuple(float(v) for v in mean[:, c]) for c in range(4))
    return FFChangeSummary(tuple(prompts), tuple(L), ff_rho, ff_change, cancel_rho, ff_retained,
                           float(err_no), float(err_ff), tuple(pairs[:top]))
