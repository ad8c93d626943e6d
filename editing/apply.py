"""The only writer of model weights: apply a rank-one update, get a handle that undoes it exactly.

`session.model.blocks[l].mlp.W_out` ([d_mlp d_model]) is a transposed view of the Hugging Face
``down_proj.weight`` ([d_model d_mlp]); the stacked ``session.model.W_out`` is a copy. The edit
is written in place into the live parameter that the view shares storage with, so the bridge,
the HF model and every view see it at once.

Exactness: the first edit of a parameter saves its original bytes. Undoing any edit rewrites
the parameter as original + the remaining edits' deltas added in the order they were applied;
when none remain the original bytes are copied back, so the weights are bitwise identical to
before. Edits can be stacked and undone in any order; `with apply(...)` undoes on exit, also
when the body raises.

Example:
    >>> with apply(s, update):
    ...     s.next_token("The Eiffel Tower is located in")   # edited
    >>> # weights restored bit for bit here
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

import torch

from workbench._types import Tensor
from workbench.errors import ShapeError, check_finite

from ._prompts import check_edit_layer
from .requests import RankOneUpdate
from .weights import live_w_out

log = logging.getLogger(__name__)

__all__ = ["apply", "RestoreHandle", "active_edits"]

_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _ParamState:
    param: torch.nn.Parameter
    transposed: bool
    original: Tensor
    active: list = field(default_factory=list)


class RestoreHandle:
    """Undo handle of one applied update; also a context manager (undo on exit)."""

    def __init__(self, session, name: str, update: RankOneUpdate, delta: Tensor):
        self._session = weakref.ref(session)
        self.name = name
        self.update = update
        self._delta = delta
        self.active = True

    def undo(self) -> bool:
        """Remove this edit (other edits stay). Returns False when already undone."""
        if not self.active:
            return False
        session = self._session()
        self.active = False
        if session is None:
            return False
        states = _REGISTRY.get(session, {})
        st = states.get(self.name)
        if st is None or self not in st.active:
            return False
        st.active.remove(self)
        _rewrite(st)
        if not st.active:
            del states[self.name]
        log.info("undid edit at %s", self.name)
        return True

    def __enter__(self) -> RestoreHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()

    def __repr__(self) -> str:
        r = self.update.request
        return (f"RestoreHandle(layer={self.update.layer}, {r.subject!r} -> {r.target!r}, "
                f"active={self.active})")


@torch.no_grad()
def _rewrite(st: _ParamState) -> None:
    st.param.data.copy_(st.original)
    for h in st.active:
        st.param.data.add_(h._delta)


@torch.no_grad()
def apply(session, update: RankOneUpdate) -> RestoreHandle:
    """Add `update` to the live W_out of `update.layer`; returns the handle that undoes it."""
    layer = check_edit_layer(session, update.layer)
    if tuple(update.u.shape) != (session.d_mlp,) or tuple(update.r.shape) != (session.d_model,):
        raise ShapeError(f"update has u {tuple(update.u.shape)} and r {tuple(update.r.shape)}; "
                         f"this model needs u ({session.d_mlp},) and r ({session.d_model},)")
    check_finite(update.u, "update.u")
    check_finite(update.r, "update.r")
    name, param, transposed = live_w_out(session, layer)
    delta = torch.outer(update.u.double(), update.r.double())
    delta = (delta.T if transposed else delta).to(param.device, param.dtype).contiguous()
    states = _REGISTRY.setdefault(session, {})
    st = states.get(name)
    if st is None:
        st = _ParamState(param, transposed, param.detach().clone())
        states[name] = st
    handle = RestoreHandle(session, name, update, delta)
    try:
        st.active.append(handle)
        param.data.add_(delta)
    except BaseException:
        if handle in st.active:
            st.active.remove(handle)
        _rewrite(st)
        if not st.active:
            del states[name]
        raise
    log.info("applied edit at %s", name)
    return handle


def active_edits(session) -> list[RestoreHandle]:
    """Edits applied to `session` and not yet undone, in the order applied."""
    return [h for st in _REGISTRY.get(session, {}).values() for h in st.active]
