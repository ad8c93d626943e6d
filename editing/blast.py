"""Blast radius: which inputs an edit reaches, predicted before it is applied, checked after.

An update D_l of W_out at layers l (rank one for ROME: D = u r^T) moves the FFN output of a
token whose key at layer l is k by k D_l. The reach of a token is

    reach(t) = sum_l |k_t^l D_l|          (ROME: |u . k_t| |r|)

with the keys of the unedited model. Over a corpus this lists the prefixes the edit touches most;
over prompts (the neighbourhood prompts of an evaluation) the largest reach over a prompt's
tokens says how hard the edit hits each of them. Whether a hit prompt breaks (its true object
falls below the edit's new target) also depends on how far ahead the true object was: with the
unedited margin m = log p(true) - log p(new) > 0, the edit breaks it when its push, taken
proportional to the reach with an unknown gain g, exceeds m. The ranking of

    break_score = reach / m                  (prompts with m <= 0 are wrong already: no score)

is the same for every g > 0, so it needs no fitting. After the edit, `auroc` says how well a
score ranked the prompts that did break (neighbourhood success lost) above those that did not
(Mann-Whitney U / (n_pos n_neg), ties counted half), over the prompts that could break.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from workbench._types import Float, Tensor
from workbench.session import Session

from ._prompts import EditError
from .requests import LayerUpdate, RankOneUpdate

__all__ = ["BlastRadius", "blast_radius", "prompt_reach", "auroc", "layer_deltas", "break_score"]


def layer_deltas(update: RankOneUpdate | LayerUpdate) -> dict[int, Tensor]:
    """layer -> [d_mlp d_model] delta of either update kind (float32, CPU)."""
    if isinstance(update, RankOneUpdate):
        return {update.layer: torch.outer(update.u.float(), update.r.float())}
    return {layer: d.float().cpu() for layer, d in update.deltas.items()}


@torch.no_grad()
def _keys(session: Session, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """FFN keys (input of W_out) of every position at `layers`, one forward of the pure view."""
    from ._hf import pure_lm
    from .rome import _down_proj

    got: dict[int, Tensor] = {}
    handles = []
    for layer in layers:
        def save(module, inputs, layer=layer):
            got[layer] = inputs[0].detach().float()
        handles.append(_down_proj(session, layer).register_forward_pre_hook(save))
    try:
        pure_lm(session).base_model(input_ids=tokens.to(session.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return got


def _reach(keys: dict[int, Tensor], deltas: dict[int, Tensor]) -> Tensor:
    out: Tensor | None = None
    for layer, D in deltas.items():
        r = (keys[layer] @ D.to(keys[layer].device)).norm(dim=-1)
        out = r if out is None else out + r
    if out is None:
        raise EditError("the update has no deltas: nothing to measure the reach of")
    return out


@torch.no_grad()
def prompt_reach(session: Session, update: RankOneUpdate | LayerUpdate, prompts: Sequence[str],
                 batch_size: int = 64) -> Float[Tensor, " n"]:
    """Largest reach over each prompt's tokens (the prediction of how hard the edit hits it)."""
    deltas = layer_deltas(update)
    out = []
    for i in range(0, len(prompts), batch_size):
        tb = session.tokenize(list(prompts[i : i + batch_size]))
        r = _reach(_keys(session, tb.tokens, list(deltas)), deltas).cpu()
        r = r.masked_fill(~tb.mask.cpu(), 0.0)
        out.append(r.max(-1).values)
    return torch.cat(out) if out else torch.zeros(0)


def break_score(reach: float, p_true: float, p_new: float) -> float | None:
    """reach / (log p_true - log p_new) for a prompt the unedited model gets right; None when
    it does not (p_true <= p_new: it cannot break). Probabilities in [0, 1] (0 read as 1e-300)."""
    if not (0 <= p_true <= 1 and 0 <= p_new <= 1):
        raise EditError(f"p_true={p_true}, p_new={p_new}: probabilities must be in [0, 1]")
    return _by_margin(reach, math.log(max(p_true, 1e-300)) - math.log(max(p_new, 1e-300)))


def _by_margin(reach: float, margin: float) -> float | None:
    return reach / margin if margin > 0 else None


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` for `labels` (None when one class is missing)."""
    s = torch.as_tensor(list(scores), dtype=torch.float64)
    y = torch.as_tensor(list(labels), dtype=torch.bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@dataclass(frozen=True)
class BlastRadius:
    """Result of `blast_radius`.

    Args:
        layers: the update's layers.
        prefixes: the corpus tokens reached most: context (text before), token, reach, offset.
        prompts: per given prompt: prompt, reach (largest over its tokens), and with a target:
            answer (the unedited top token), margin (log p(answer) - log p(target's first token)),
            break_score (reach / margin; None when the target already leads); predicted (in the
            top `predict_share` of break score, or of reach without a target).
        reach_quantiles: corpus reach at quantiles 0.5, 0.9, 0.99, max.
    """

    layers: list[int]
    prefixes: list[dict]
    prompts: list[dict] = field(default_factory=list)
    reach_quantiles: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "prefixes": self.prefixes, "prompts": self.prompts,
                "reach_quantiles": self.reach_quantiles}


@torch.no_grad()
def blast_radius(session: Session, update: RankOneUpdate | LayerUpdate, corpus=None, n_tokens: int = 8192,
                 top: int = 20, prompts: Sequence[str] = (), predict_share: float = 0.2,
                 window: int = 128, target: str | None = None) -> BlastRadius:
    """The corpus prefixes whose keys `update` reaches most, and the reach of `prompts`.

    With `target` (the edit's new object), each prompt's break score is its reach over the
    margin of its unedited answer over the target's first token (module docstring), and the
    prediction ranks by it. Pure: reads the unedited model (the update is not applied).
    """
    deltas = layer_deltas(update)
    prefixes, quant = [], {}
    if corpus is not None:
        vals, offs = [], []
        for wb in corpus.batches(session, window=window, tokens_per_batch=min(n_tokens, 8192),
                                 max_tokens=n_tokens, progress=False):
            r = _reach(_keys(session, wb.tokens, list(deltas)), deltas).cpu()
            vals.append(r.reshape(-1))
            offs.append(wb.offsets().reshape(-1).cpu())
        v, o = torch.cat(vals), torch.cat(offs)
        ok = o >= 0
        v, o = v[ok], o[ok]
        q = torch.quantile(v.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
        quant = {"0.5": float(q[0]), "0.9": float(q[1]), "0.99": float(q[2]), "max": float(v.max())}
        for j in v.topk(min(top, len(v))).indices.tolist():
            ctx, tok, _ = corpus.context(int(o[j]), before=16)
            prefixes.append({"context": ctx, "token": tok, "reach": float(v[j]), "offset": int(o[j])})
    rows: list[dict] = []
    if prompts:
        r = prompt_reach(session, update, prompts)
        rows = [{"prompt": p, "reach": float(x)} for p, x in zip(prompts, r)]
        if target is not None:
            from ._prompts import target_ids

            logp = torch.log_softmax(session.last_logits(list(prompts)).float(), -1)     # [n vocab]
            for row, lp in zip(rows, logp):
                t = target_ids(session, row["prompt"], target)[0]
                a = int(lp.argmax())
                margin = float(lp[a] - lp[t])
                row.update({"answer": session.tokenizer.decode([a]), "margin": margin,
                            "break_score": _by_margin(row["reach"], margin)})
        rank = [(x["break_score"] if x["break_score"] is not None else -math.inf) if target is not None
                else x["reach"] for x in rows]
        k = max(1, round(predict_share * len(rows)))
        cut = sorted(rank, reverse=True)[k - 1]
        for row, score in zip(rows, rank):
            row["predicted"] = bool(score >= cut and score > -math.inf)
    return BlastRadius(sorted(deltas), prefixes, rows, quant)
