"""What one applied rank-one edit did at its own prompt: p before / after, the units it moved.

    delta_rel = ||u r^T||_F / ||W_out||_F,   unit i moved by |u_i| ||r||,   r read as tokens

r = v* - v is the change of the subject's FFN output at the edited layer l, a direction: its
tokens are unembed(L_l r) with L_l the chosen lens's linear part (the identity for the logit
lens; x + x A_l for a tuned lens, bias left out; J_l x for the Jacobian lens), as
`workbench.lenses.direction_logits` reads every direction.

Given a corpus, the outcome also carries the edit's blast radius (`editing.blast`), computed
from the unedited model *before* the update is applied: the corpus prefixes whose FFN keys the
update reaches most (|u . k| |r|), and the reach of the neighbour prompts given.

`apply_and_measure` is the edit studio's step: it measures the unedited model, applies the
update (`editing.apply`, the only writer of weights), measures again and returns the outcome with
the restore handle; if measuring the edited model fails, the edit is undone before the error
propagates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.lenses import LensReader, as_reader, direction_logits, kind_of
from workbench.session import Session
from workbench.vocab import next_tokens

from ._prompts import locate_subject, target_id
from .apply import RestoreHandle, apply
from .blast import BlastRadius, blast_radius
from .requests import RankOneUpdate

__all__ = ["EditOutcome", "apply_and_measure"]


@dataclass(frozen=True)
class EditOutcome:
    """A rank-one edit applied: what changed at its prompt, and by how much.

    Args:
        prompt, subject, target: the request; layer: the edited FFN.
        answer: the model's top-1 answer before the edit.
        p_before, p_after: {"target": p, "answer": p} at the prompt's last token.
        top_before, top_after: [k] (token, p) next tokens before / after.
        gen_before, gen_after: greedy continuations of the prompt.
        delta_rel: ||u r^T||_F / ||W_out||_F.
        units: [k] (unit, |u_i| ||r||): the rows of W_out the update moves most.
        r_promotes: [k] tokens r = v* - v (the value change) pushes up, through `lens`.
        active: whether the edit is still applied. lens: the lens r was read through.
        blast: the blast radius predicted before the edit (None without a corpus).
    """

    prompt: str
    subject: str
    target: str
    layer: int
    answer: str
    p_before: dict
    p_after: dict
    top_before: tuple[tuple[str, float], ...]
    top_after: tuple[tuple[str, float], ...]
    gen_before: str
    gen_after: str
    delta_rel: float
    units: tuple[tuple[int, float], ...]
    r_promotes: tuple[str, ...]
    active: bool = True
    lens: str = "logit"
    blast: BlastRadius | None = None


@torch.no_grad()
def _probs(session: Session, text: str, ids: dict[str, int]) -> dict[str, float]:
    p = torch.softmax(session.last_logits(text)[0].float(), -1)
    return {name: float(p[i]) for name, i in ids.items()}


def apply_and_measure(session: Session, update: RankOneUpdate, gen_tokens: int = 12,
                      k: int = 5, lens: str | LensReader = "logit", corpus=None, blast_tokens: int = 4096,
                      neighbours: tuple[str, ...] = ()) -> tuple[EditOutcome, RestoreHandle]:
    """Measure, apply `update`, measure again; returns (outcome, handle that undoes the edit).

    `lens`: the lens r = v* - v is read through (module docstring; a kind or a loaded reader).
    `corpus`: if given, the blast radius over its first `blast_tokens` tokens (and the reach of
    `neighbours`) is computed before the edit is applied.
    """
    s = session
    reader = as_reader(s, lens)          # a missing or foreign lens fails before any weight moves
    req = update.request
    sp = locate_subject(s, req.prompt, req.subject)
    ids = {"target": target_id(s, sp.text, req.target),
           "answer": int(s.last_logits(sp.text)[0].argmax())}
    p_before, top_before = _probs(s, sp.text, ids), next_tokens(s, sp.text, k)
    gen_before = s.generate(sp.text, max_new_tokens=gen_tokens)
    blast = (blast_radius(s, update, corpus, n_tokens=blast_tokens, top=10, prompts=neighbours, target=req.target)
             if corpus is not None or neighbours else None)
    handle = apply(s, update)
    try:
        p_after, top_after = _probs(s, sp.text, ids), next_tokens(s, sp.text, k)
        gen_after = s.generate(sp.text, max_new_tokens=gen_tokens)
    except BaseException:
        handle.undo()
        raise
    layer = update.layer
    W = s.model.blocks[layer].mlp.W_out.detach().float()
    u, r = update.u.float().cpu(), update.r.float().cpu()
    rel = float(u.norm() * r.norm() / W.norm().cpu())
    top_units = (u.abs() * r.norm()).topk(min(8, u.numel()))
    with torch.no_grad():
        promotes = direction_logits(s, r.to(s.device), layer, reader).float().topk(8).indices.tolist()
    out = EditOutcome(
        prompt=sp.text, subject=req.subject, target=req.target, layer=int(layer),
        answer=s.tokenizer.decode([ids["answer"]]), p_before=p_before, p_after=p_after,
        top_before=top_before, top_after=top_after, gen_before=gen_before, gen_after=gen_after,
        delta_rel=rel, units=tuple(zip(top_units.indices.tolist(), top_units.values.tolist())),
        r_promotes=tuple(s.tokenizer.decode([t]) for t in promotes),
        lens=kind_of(reader), blast=blast,
    )
    return out, handle
