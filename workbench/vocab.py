"""Vocabulary-space projections: values, sub-updates and the residual read as tokens.

Convention (one for the whole workbench): a vector x in the residual basis is read in the
vocabulary as ``session.unembed(x) = W_U^T norm_f(x) (+ b_U)``, with the model's own final
norm norm_f (RMSNorm with its learned scale g). For a value vector v_i this ranks tokens exactly
as W_U^T (g * v_i) does, because RMSNorm only rescales the whole vector; it is the logit-lens
reading of Geva et al. 2022 with the final norm handled as the model does.

On Gemma the residual receives post_ffn_norm(FFN(x)), so a value's projection there reads the
direction before that norm (the norm's scale is elementwise); documented, not hidden.

Other lenses: `value_logits`, `value_tokens`, `ffn_sub_updates` and `written_tokens` take
``lens="logit" | "tuned" | "jacobian"`` (or a reader from `workbench.lenses.load_lens`). What
they read are directions written inside block l (a value v_i, a sub-update m_i v_i, a sublayer's
output), so a tuned or Jacobian lens applies only its linear part L_l before the unembedding:
unembed(v + v A_l) for the tuned lens (the bias b_l is left out: it belongs to the state, not
to what a component adds), unembed(J_l v) for the Jacobian lens (`workbench.lenses.direction_logits`).
With the default ``lens="logit"`` every reading is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ._types import Float, Int, Tensor
from .capture import capture
from .errors import (
    NeuronOutOfRange,
    PositionOutOfRange,
    ShapeError,
    TokenError,
    UnknownSiteError,
    check_index,
    check_int,
    check_units,
)
from .ffn import ffn_weights
from .hooks import Intervention, Site, intervene
from .lenses import LensReader, as_reader, direction_logits
from .session import Session

__all__ = [
    "TokenScore",
    "ValueTokens",
    "value_logits",
    "value_tokens",
    "top_tokens",
    "next_tokens",
    "written_tokens",
    "LogitLens",
    "logit_lens",
    "SubUpdate",
    "SubUpdates",
    "ffn_sub_updates",
    "DistributionChange",
    "memory_intervention",
]


@dataclass(frozen=True)
class TokenScore:
    """One vocabulary entry with a score (a logit, a probability or a change)."""

    token: str
    id: int
    score: float


def top_tokens(session: Session, scores: Float[Tensor, " d_vocab"], k: int = 10,
               largest: bool = True) -> tuple[TokenScore, ...]:
    """The k highest (or lowest) scoring tokens of one vocabulary vector (all of them when k
    is past its length)."""
    k = check_int(k, "k", ShapeError, lo=1)
    v, i = scores.float().topk(min(k, scores.shape[-1]), largest=largest)
    strs = session.to_str_tokens(i)
    return tuple(TokenScore(s, int(t), float(x)) for s, t, x in zip(strs, i.tolist(), v.tolist()))


def _neurons(session: Session, layer: int, neurons: int | Sequence[int] | None) -> list[int]:
    session.check_layer(layer)
    if neurons is None:
        return list(range(session.d_mlp))
    units = check_units(neurons, "neurons", NeuronOutOfRange)
    if not units:
        raise NeuronOutOfRange(f"neurons={neurons!r} is empty; give at least one neuron in "
                               f"0..{session.d_mlp - 1} (or None for all)")
    return [check_index(n, session.d_mlp, f"neuron (layer {layer})", NeuronOutOfRange) for n in units]


@torch.no_grad()
def value_logits(session: Session, layer: int, neurons: int | Sequence[int] | None = None,
                 chunk: int = 512, lens: str | LensReader = "logit") -> Float[Tensor, "n d_vocab"]:
    """Value vectors v_i of `layer` read in the vocabulary: unembed(v_i), one row per neuron
    (through `lens`'s linear part at `layer`, L_l v_i, for a tuned / Jacobian lens)."""
    units = _neurons(session, layer, neurons)
    reader = as_reader(session, lens)
    values = ffn_weights(session, layer).values
    out = [direction_logits(session, values[units[i : i + chunk]], layer, reader).float()
           for i in range(0, len(units), chunk)]
    return torch.cat(out, 0)


@dataclass(frozen=True)
class ValueTokens:
    """What value v_i of (layer, neuron) promotes and suppresses when its coefficient is positive."""

    layer: int
    neuron: int
    norm: float
    promoted: tuple[TokenScore, ...]
    suppressed: tuple[TokenScore, ...]


def value_tokens(session: Session, layer: int, neurons: int | Sequence[int], k: int = 10,
                 lens: str | LensReader = "logit") -> list[ValueTokens]:
    """Top promoted and suppressed tokens of each value vector (logits of unembed(v_i), or of
    unembed(L_l v_i) through `lens`'s linear part: see the module docstring)."""
    k = check_int(k, "k", ShapeError, lo=1)
    units = _neurons(session, layer, neurons)
    logits = value_logits(session, layer, units, lens=lens)
    norms = torch.linalg.vector_norm(ffn_weights(session, layer).values[units].float(), dim=-1)
    return [ValueTokens(layer, n, float(norms[j]), top_tokens(session, logits[j], k),
                        top_tokens(session, logits[j], k, largest=False))
            for j, n in enumerate(units)]


# ---------------------------------------------------------------- logit lens
LENS_KINDS = ("resid_pre", "resid_mid", "resid_post")


@dataclass(frozen=True)
class LogitLens:
    """The residual stream of one prompt read in the vocabulary at every layer and sublayer.

    Args:
        prompt, str_tokens: the input and its tokens [pos].
        kinds: the residual sites read, in order within a layer (resid_pre, resid_mid, resid_post).
        top_ids, top_probs: [kind layer pos k] the lens's top-k tokens and probabilities.
        top_strs: nested tuples [kind][layer][pos][k] of token strings.
        targets: the target tokens followed (the model's final top-1 at the last position when
            none are given).
        target_ids: [t]. target_probs, target_ranks: [kind layer pos t] (rank 0 = top-1).
        final_probs: [pos t] the model's own output probabilities of the targets.
    """

    prompt: str
    str_tokens: tuple[str, ...]
    kinds: tuple[str, ...]
    top_ids: Int[Tensor, "kind layer pos k"]
    top_probs: Float[Tensor, "kind layer pos k"]
    top_strs: tuple
    targets: tuple[str, ...]
    target_ids: Int[Tensor, " t"]
    target_probs: Float[Tensor, "kind layer pos t"]
    target_ranks: Int[Tensor, "kind layer pos t"]
    final_probs: Float[Tensor, "pos t"]

    @property
    def n_layers(self) -> int:
        return int(self.top_ids.shape[1])

    def first_top1_layer(self, target: int = 0, kind: str = "resid_post", pos: int = -1) -> int | None:
        """First layer whose lens puts target `target` at rank 0 (None when none does)."""
        ranks = self.target_ranks[self.kinds.index(kind), :, pos, target]
        hit = (ranks == 0).nonzero()
        return int(hit[0]) if len(hit) else None


@torch.no_grad()
def logit_lens(session: Session, prompt: str, targets: Sequence[str] | None = None, k: int = 5,
               kinds: Sequence[str] = LENS_KINDS) -> LogitLens:
    """Logit lens: softmax(unembed(resid)) at resid_pre/mid/post of every layer and position.

    `targets`: a non-empty list of one-token strings to follow, or None for the model's own top-1
    at the last position; `k`: the number of top tokens kept, 1..d_vocab.
    """
    k = check_int(k, "k", ShapeError, lo=1, hi=session.d_vocab)
    if isinstance(kinds, str) or not kinds:
        raise UnknownSiteError(f"kinds={kinds!r} must be a non-empty list of residual site kinds, "
                               f"such as {list(LENS_KINDS)}")
    for kd in kinds:
        Site(kd, 0)  # validates the kind
    tids: list[int] | None = None
    names: tuple[str, ...] = ()
    if targets is not None:
        given = list(targets) if isinstance(targets, Iterable) and not isinstance(targets, str) else []
        if not given:
            raise TokenError(f"targets={targets!r} must be a non-empty list of strings (one token "
                             "each), or None for the model's own top-1")
        tids, names = session.token_ids(given), tuple(given)
    sites = [Site(kd, layer) for layer in range(session.n_layers) for kd in kinds]
    cap = capture(session, prompt, sites, logits=True)
    n = int(cap.batch.lengths[0])
    resid = torch.stack([torch.stack([cap[Site(kd, layer)][0, :n] for layer in range(session.n_layers)])
                         for kd in kinds])  # [kind layer pos d_model]
    logp = session.unembed(resid).float().log_softmax(-1)  # [kind layer pos vocab]
    final = cap.need_logits()[0, :n].float().softmax(-1)
    if tids is None:
        tids = [int(final[-1].argmax())]
        names = tuple(session.to_str_tokens(tids))
    tid = torch.tensor(tids, device=logp.device)
    tp, ti = logp.topk(k, dim=-1)
    tgt_logp = logp[..., tid]  # [kind layer pos t]
    ranks = (logp.unsqueeze(-1) > tgt_logp.unsqueeze(-2)).sum(-2)
    strs = tuple(tuple(tuple(tuple(session.to_str_tokens(ti[a, b, c])) for c in range(n))
                       for b in range(session.n_layers)) for a in range(len(kinds)))
    return LogitLens(prompt, tuple(cap.batch.str_tokens[0]), tuple(kinds), ti.cpu(), tp.exp().cpu(), strs,
                     names, tid.cpu(), tgt_logp.exp().cpu(), ranks.cpu(), final[:, tid].cpu())


# ---------------------------------------------------------------- sub-updates
@dataclass(frozen=True)
class SubUpdate:
    """One sub-update m_i v_i of an FFN update, with the tokens it promotes."""

    neuron: int
    coefficient: float
    value_norm: float
    magnitude: float          # |m_i| * ||v_i||
    target_effect: float      # d logit(target) from this sub-update (see `ffn_sub_updates`)
    promoted: tuple[TokenScore, ...]     # top of unembed(m_i v_i): what adding it pushes up
    suppressed: tuple[TokenScore, ...] = ()   # bottom of unembed(m_i v_i)


@dataclass(frozen=True)
class SubUpdates:
    """The FFN update of one layer at one position, split into sub-updates m_i v_i.

    Args:
        by_magnitude: top sub-updates ranked by |m_i| * ||v_i||.
        by_target: top sub-updates ranked by their effect on the target's logit (if a target).
        update: [d_model] the FFN output sum_i m_i v_i (+ bias).
        coefficients: [d_mlp] m_i.
        update_promoted: tokens the whole update promotes.
    """

    prompt: str
    layer: int
    position: int
    token: str
    target: str | None
    by_magnitude: tuple[SubUpdate, ...]
    by_target: tuple[SubUpdate, ...]
    update: Float[Tensor, " d_model"]
    coefficients: Float[Tensor, " d_mlp"]
    update_promoted: tuple[TokenScore, ...]


@torch.no_grad()
def ffn_sub_updates(session: Session, prompt: str, layer: int, position: int = -1, target: str | None = None,
                    k: int = 10, n_tokens: int = 5, interventions: Sequence[Intervention] = (),
                    keep: Sequence[int] = (), lens: str | LensReader = "logit") -> SubUpdates:
    """Split `layer`'s FFN update at `position` into sub-updates m_i v_i and rank them.

    The effect on the target's logit is the sub-update's direct contribution through the
    frozen final norm: m_i * (W_U[:, t] . (g * v_i)) / rms(h), with h the final residual at that
    position and g the final norm's scale (the linearisation used by direct logit attribution).
    With `interventions` (e.g. units zeroed or scaled), coefficients are read under them; units
    in `keep` head the magnitude ranking whatever their size (a zeroed unit stays listed, so a
    view can restore it). `lens`: the promoted / suppressed tokens of each sub-update and of the
    whole update are read through that lens's linear part at `layer` (module docstring); the
    target effect stays the direct logit effect.
    """
    k = check_int(k, "k", ShapeError, lo=1)
    check_int(n_tokens, "n_tokens", ShapeError, lo=1)
    session.check_layer(layer)
    position = check_int(position, "position", PositionOutOfRange)
    keep = check_units(keep, "keep", NeuronOutOfRange)
    for i in keep:
        session.check_neuron(layer, i)
    batch = session._as_batch(prompt)  # tokenized once, so the position is checked first
    n = int(batch.lengths[0])
    pos = position + n if position < 0 else position
    if not 0 <= pos < n:
        raise PositionOutOfRange(f"position={position} is out of range for a prompt of {n} tokens "
                                 f"(valid: {-n}..{n - 1})")
    reader = as_reader(session, lens)   # a missing or foreign lens fails before the forward
    last = session.n_layers - 1
    cap = capture(session, batch, [Site("mlp_post", layer), Site("mlp_out", layer), Site("resid_post", last)],
                  interventions=interventions)
    w = ffn_weights(session, layer)
    m = cap[Site("mlp_post", layer)][0, pos].float()
    values = w.values.float()
    norms = torch.linalg.vector_norm(values, dim=-1)
    magnitude = m.abs() * norms
    tid = session.token_id(target) if target is not None else None
    if tid is not None:
        h = cap[Site("resid_post", last)][0, pos].float()
        direction = session.final_norm(h) / h  # g / rms(h), elementwise (exact for RMSNorm)
        direction = torch.nan_to_num(direction)
        u_t = session.W_U[:, tid].float()
        effect = m * (values @ (direction * u_t))
    else:
        effect = torch.zeros_like(m)

    def rows(idx):
        # read each signed value as workbench.vocab does: unembed(sign(m_i) v_i); the final norm
        # makes the reading independent of |m_i| (a zeroed unit still shows what it writes)
        sign = torch.where(m[idx] < 0, -1.0, 1.0)[:, None]
        lg = direction_logits(session, values[idx] * sign, layer, reader).float()
        return tuple(SubUpdate(int(i), float(m[i]), float(norms[i]), float(magnitude[i]), float(effect[i]),
                               top_tokens(session, lg[j], n_tokens),
                               top_tokens(session, lg[j], n_tokens, largest=False))
                     for j, i in enumerate(idx.tolist()))

    order = magnitude.topk(min(k, len(m))).indices.tolist()
    picked = list(dict.fromkeys([*map(int, keep), *order]))[: max(k, len(keep))]
    by_mag = rows(torch.tensor(picked, dtype=torch.long))
    by_tgt = rows(effect.topk(min(k, len(m))).indices) if tid is not None else ()
    update = cap[Site("mlp_out", layer)][0, pos].float()
    return SubUpdates(prompt, layer, pos, cap.batch.str_tokens[0][pos], target, by_mag, by_tgt,
                      update.cpu(), m.cpu(),
                      top_tokens(session, direction_logits(session, update, layer, reader).float(), n_tokens))


# ---------------------------------------------------------------- interventions on memories
@dataclass(frozen=True)
class DistributionChange:
    """Next-token distribution of a prompt before and after interventions on memories.

    Args:
        before, after: top tokens with probabilities.
        gained, lost: tokens whose probability rose / fell most.
        kl: KL(before || after) of the next-token distributions.
    """

    prompt: str
    interventions: tuple[str, ...]
    before: tuple[TokenScore, ...]
    after: tuple[TokenScore, ...]
    gained: tuple[TokenScore, ...]
    lost: tuple[TokenScore, ...]
    kl: float


def memory_intervention(session: Session, prompt: str, interventions: Sequence[Intervention],
                        k: int = 10) -> DistributionChange:
    """Run `prompt` with and without `interventions` (e.g. zero/scale/set neurons)."""
    check_int(k, "k", ShapeError, lo=1)
    if not interventions:
        raise ShapeError("interventions=[] is empty; give at least one (zero_neurons, ...)")
    p0 = session.last_logits(prompt)[0].float().softmax(-1)
    with intervene(session, *interventions):
        p1 = session.last_logits(prompt)[0].float().softmax(-1)
    diff = p1 - p0
    kl = float((p0 * (p0.clamp_min(1e-12).log() - p1.clamp_min(1e-12).log())).sum())
    return DistributionChange(prompt, tuple(iv.description for iv in interventions),
                              top_tokens(session, p0, k), top_tokens(session, p1, k),
                              top_tokens(session, diff, k), top_tokens(session, diff, k, largest=False), kl)


@torch.no_grad()
def next_tokens(session: Session, prompt: str, k: int = 5) -> tuple[tuple[str, float], ...]:
    """The top-k next tokens of `prompt` with their probabilities, as (token, p) pairs."""
    k = check_int(k, "k", ShapeError, lo=1, hi=session.d_vocab)
    p = torch.softmax(session.last_logits(prompt)[0].float(), -1).topk(k)
    return tuple((session.tokenizer.decode([int(i)]), float(v))
                 for i, v in zip(p.indices.tolist(), p.values.tolist()))


@torch.no_grad()
def written_tokens(session: Session, prompt: str, kind: str = "mlp_resid", position: int = -1,
                   k: int = 5, lens: str | LensReader = "logit") -> list[tuple[TokenScore, ...]]:
    """Per layer, the top tokens of what sublayer `kind` writes into the residual at `position`.

    ``mlp_resid`` / ``attn_resid`` are what reaches the residual (after Gemma's post-norms), read
    through the final norm and unembedding: top of unembed(y_l) (of unembed(L_l y_l) through
    `lens`'s linear part).
    """
    if kind not in ("mlp_resid", "attn_resid", "mlp_out", "attn_out"):
        raise ShapeError(f"kind={kind!r}; choose mlp_resid, attn_resid, mlp_out or attn_out")
    position = check_int(position, "position", PositionOutOfRange)
    check_int(k, "k", ShapeError, lo=1)
    sites = [Site(kind, layer) for layer in range(session.n_layers)]
    cap = capture(session, prompt, sites)
    n = int(cap.batch.lengths[0])
    pos = position + n if position < 0 else position
    if not 0 <= pos < n:
        raise PositionOutOfRange(f"position={position} is out of range for a prompt of {n} tokens "
                                 f"(valid: {-n}..{n - 1})")
    ys = torch.stack([cap[s][0, pos] for s in sites])
    if isinstance(lens, str) and lens == "logit":
        logits = session.unembed(ys).float()
    else:
        reader = as_reader(session, lens)
        logits = torch.stack([direction_logits(session, y, layer, reader).float() for layer, y in enumerate(ys)])
    return [top_tokens(session, row, k) for row in logits]
