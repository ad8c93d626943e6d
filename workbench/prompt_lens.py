"""The logit lens of one prompt under FFN unit scalings: what every layer predicts, cell by cell.

    p_l(t | x_<=i) = softmax(W_U norm(h_l,i))_t       (h_l,i = resid_post of layer l at i)

`lens_base` runs the prompt once unedited and keeps its residuals; `prompt_lens` reads the lens
under a set of `UnitScale`s (m_i -> factor * m_i of FFN unit i of a layer at one token), and
unembeds again only the cells whose residual the scalings changed: a change at the last token
costs one forward pass from the first edited layer plus at most n_layers unembeddings. Callers
that redraw often (the widgets' controller) keep the base and pass it back.

``lens="tuned" | "jacobian"`` (or a reader from `workbench.lenses.load_lens`) reads each cell
through that lens instead, softmax(unembed(T_l(h_l,i))); the base remembers its lens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ._types import Float, Int, Tensor
from .capture import capture
from .errors import EmptyPromptError, PositionOutOfRange
from .hooks import Intervention, scale_neurons
from .lenses import LensReader, LogitReader, as_reader, kind_of
from .session import Session, TokenBatch

__all__ = ["UnitScale", "PromptLens", "LensBase", "lens_base", "prompt_lens", "unit_interventions"]


@dataclass(frozen=True, order=True)
class UnitScale:
    """Scale FFN unit `neuron` of `layer` at token `pos` by `factor` (0 = zero, >1 = boost)."""

    layer: int
    pos: int
    neuron: int
    factor: float


@dataclass(frozen=True)
class PromptLens:
    """Logit lens of one prompt (tokens x layers) and its next-token distribution, under scalings.

    Args:
        prompt: the text. str_tokens: [pos].
        top_ids, top_probs, top_strs: [layer pos] the lens's top-1 token at each cell.
        next_ids, next_probs, next_strs: [k] the top-k next tokens at the last position.
        base_next_probs: [k] the same tokens' probabilities without scalings.
        edits: the FFN unit scalings in force. lens: the lens the cells are read through
            (``logit``, ``tuned`` or ``jacobian``).
    """

    prompt: str
    str_tokens: tuple[str, ...]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_strs: tuple[tuple[str, ...], ...]
    next_ids: np.ndarray
    next_probs: np.ndarray
    next_strs: tuple[str, ...]
    base_next_probs: np.ndarray
    edits: tuple[UnitScale, ...] = ()
    lens: str = "logit"

    @property
    def n_layers(self) -> int:
        return int(self.top_probs.shape[0])

    @property
    def prediction(self) -> str:
        return self.next_strs[0]


@dataclass(frozen=True)
class LensBase:
    """The unedited run of one prompt: residuals per layer, their lens, the next-token probs.

    `reader`: the lens the cells were read through (`workbench.lenses`; the logit lens by default).
    """

    prompt: str
    batch: TokenBatch
    resid: Float[Tensor, "layer pos d_model"]
    top_ids: Int[Tensor, "layer pos"]
    top_probs: Float[Tensor, "layer pos"]
    next_probs: Float[Tensor, " d_vocab"]
    reader: LensReader = LogitReader()


def _lens_of(session: Session, resid: Tensor, layer: int | None = None,
             reader: LensReader | None = None) -> tuple[Tensor, Tensor]:
    """Top-1 id and probability of the lens of residual vectors [... d_model] of block `layer`
    (the logit lens, any layer, when `reader` is None or the logit reader)."""
    if reader is None or isinstance(reader, LogitReader):
        logits = session.unembed(resid).float()
    else:
        logits = reader.logits(session, resid, int(layer if layer is not None else -1)).float()
    logp = torch.log_softmax(logits, -1)
    top = logp.max(-1)
    return top.indices, top.values.exp()


def _lens_layers(session: Session, resid: Tensor, first: int, reader: LensReader) -> tuple[Tensor, Tensor]:
    """`_lens_of` of resid [layer pos d_model] whose row j is block first + j."""
    if isinstance(reader, LogitReader):
        return _lens_of(session, resid)
    out = [_lens_of(session, resid[j], first + j, reader) for j in range(resid.shape[0])]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


def _check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise EmptyPromptError(f"prompt={prompt!r} is empty; type a prompt")


@torch.no_grad()
def lens_base(session: Session, prompt: str, lens: str | LensReader = "logit") -> LensBase:
    """Run `prompt` once, unedited, keeping every layer's residual and its `lens` reading."""
    _check_prompt(prompt)
    s = session
    reader = as_reader(s, lens)
    batch = s.tokenize(prompt)
    sites = [f"resid_post:{i}" for i in range(s.n_layers)]
    cap = capture(s, batch, sites, logits=True)
    resid = torch.stack([cap[f"resid_post:{i}"][0] for i in range(s.n_layers)])
    ids, probs = _lens_layers(s, resid, 0, reader)
    nxt = torch.softmax(cap.need_logits()[0, -1].float(), -1)
    return LensBase(prompt, batch, resid, ids, probs, nxt, reader)


def unit_interventions(edits: Iterable[UnitScale]) -> list[Intervention]:
    """One `scale_neurons` intervention per (layer, pos, factor) group of `edits`."""
    groups: dict[tuple[int, int, float], list[int]] = {}
    for e in edits:
        groups.setdefault((e.layer, e.pos, float(e.factor)), []).append(e.neuron)
    return [scale_neurons(layer, units, f, positions=[pos]) for (layer, pos, f), units in groups.items()]


@torch.no_grad()
def prompt_lens(session: Session, prompt: str | LensBase, edits: Iterable[UnitScale] = (),
                top_k: int = 10, lens: str | LensReader | None = None) -> PromptLens:
    """Logit lens and top-`top_k` next tokens of a prompt with FFN units scaled by `edits`.

    `prompt` is the text or its `lens_base` (kept by callers that redraw the same prompt).
    `lens`: the lens the cells are read through (default: the base's, else the logit lens); a
    base read through another lens is read again.
    """
    s = session
    if isinstance(prompt, LensBase):
        base = prompt
        if lens is not None and kind_of(lens) != kind_of(base.reader):
            base = lens_base(s, base.prompt, lens)
    else:
        base = lens_base(s, prompt, "logit" if lens is None else lens)
    reader = base.reader
    edits = tuple(sorted(set(edits)))
    n = int(base.batch.lengths[0])
    for e in edits:
        s.check_neuron(e.layer, e.neuron)
        if not 0 <= e.pos < n:
            raise PositionOutOfRange(f"pos={e.pos} is out of range; the prompt has {n} tokens "
                                     f"(0..{n - 1})")
    ids, probs, nxt = base.top_ids, base.top_probs, base.next_probs
    if edits:
        first = min(e.layer for e in edits)
        sites = [f"resid_post:{i}" for i in range(first, s.n_layers)]
        cap = capture(s, base.batch, sites, logits=True, interventions=unit_interventions(edits))
        resid = torch.stack([cap[f"resid_post:{i}"][0] for i in range(first, s.n_layers)])
        changed = (resid != base.resid[first:]).any(-1)       # [layer' pos]
        ids, probs = base.top_ids.clone(), base.top_probs.clone()
        if changed.any() and isinstance(reader, LogitReader):
            ci, cp = _lens_of(s, resid[changed])
            ids[first:][changed], probs[first:][changed] = ci, cp
        elif changed.any():
            for j in changed.any(-1).nonzero()[:, 0].tolist():
                ci, cp = _lens_of(s, resid[j][changed[j]], first + j, reader)
                ids[first + j][changed[j]], probs[first + j][changed[j]] = ci, cp
        nxt = torch.softmax(cap.need_logits()[0, -1].float(), -1)
    top = nxt.topk(top_k)
    dec = s.tokenizer.decode
    strs = tuple(tuple(dec([int(i)]) for i in row) for row in ids.tolist())
    return PromptLens(
        prompt=base.prompt, str_tokens=tuple(base.batch.str_tokens[0]),
        top_ids=ids.cpu().numpy(), top_probs=probs.cpu().numpy(), top_strs=strs,
        next_ids=top.indices.cpu().numpy(), next_probs=top.values.cpu().numpy(),
        next_strs=tuple(dec([int(i)]) for i in top.indices.tolist()),
        base_next_probs=base.next_probs[top.indices].cpu().numpy(), edits=edits,
        lens=kind_of(reader),
    )
