"""The only writer of model weights: apply an update (rank one or per-layer dense), get a handle
that undoes it exactly.

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
from workbench.session import Session

from ._prompts import EditError, check_edit_layer
from .requests import LayerUpdate, RankOneUpdate
from .weights import live_w_out

log = logging.getLogger(__name__)

__all__ = ["apply", "RestoreHandle", "active_edits", "original_weights"]

_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _ParamState:
    param: torch.nn.Parameter
    transposed: bool
    original: Tensor
    active: list = field(default_factory=list)
    name: str = ""


class RestoreHandle:
    """Undo handle of one applied update (one or more layers); also a context manager (undo on exit).

    `deltas` maps each written parameter's name to the exact tensor added to it (the parameter's
    layout and dtype): what a ledger saves to replay the edit bit for bit.
    """

    def __init__(self, session: Session, update, deltas: dict[str, Tensor]):
        self._session = weakref.ref(session)
        self.update = update
        self.deltas = deltas
        self.active = True

    @property
    def name(self) -> str:
        """The (first) written parameter's name."""
        return next(iter(self.deltas))

    @property
    def _delta(self) -> Tensor:
        return self.deltas[self.name]

    def undo(self) -> bool:
        """Remove this edit (other edits stay). Returns False when already undone."""
        if not self.active:
            return False
        session = self._session()
        self.active = False
        if session is None:
            return False
        states = _REGISTRY.get(session, {})
        found = False
        for name in self.deltas:
            st = states.get(name)
            if st is None or self not in st.active:
                continue
            found = True
            st.active.remove(self)
            _rewrite(st)
            if not st.active:
                del states[name]
        if found:
            log.info("undid edit at %s", ", ".join(self.deltas))
        return found

    def __enter__(self) -> RestoreHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()

    def __repr__(self) -> str:
        u = self.update
        if isinstance(u, RankOneUpdate):
            r = u.request
            return (f"RestoreHandle(layer={u.layer}, {r.subject!r} -> {r.target!r}, "
                    f"active={self.active})")
        return (f"RestoreHandle({getattr(u, 'method', '?')}, layers={list(getattr(u, 'layers', ()))}, "
                f"{len(getattr(u, 'requests', ()))} requests, active={self.active})")


@torch.no_grad()
def _rewrite(st: _ParamState) -> None:
    name = st.name
    st.param.data.copy_(st.original)
    for h in st.active:
        st.param.data.add_(h.deltas[name])


def _layer_deltas(session: Session, update) -> list[tuple[int, Tensor]]:
    """(layer, [d_mlp d_model] delta) pairs of a RankOneUpdate or LayerUpdate, checked."""
    if isinstance(update, RankOneUpdate):
        layer = check_edit_layer(session, update.layer)
        if tuple(update.u.shape) != (session.d_mlp,) or tuple(update.r.shape) != (session.d_model,):
            raise ShapeError(f"update has u {tuple(update.u.shape)} and r {tuple(update.r.shape)}; "
                             f"this model needs u ({session.d_mlp},) and r ({session.d_model},)")
        check_finite(update.u, "update.u")
        check_finite(update.r, "update.r")
        return [(layer, torch.outer(update.u.double(), update.r.double()))]
    if isinstance(update, LayerUpdate):
        if not update.deltas:
            raise EditError("the update has no layer to write (empty deltas)")
        out = []
        for layer in update.layers:
            d = update.deltas[layer]
            check_edit_layer(session, layer)
            if tuple(d.shape) != (session.d_mlp, session.d_model):
                raise ShapeError(f"delta of layer {layer} is {tuple(d.shape)}; this model needs "
                                 f"({session.d_mlp}, {session.d_model})")
            check_finite(d, f"delta of layer {layer}")
            out.append((layer, d))
        return out
    raise EditError(f"cannot apply a {type(update).__name__}; give a RankOneUpdate or LayerUpdate")


@torch.no_grad()
def apply(session: Session, update: RankOneUpdate | LayerUpdate) -> RestoreHandle:
    """Add `update` to the live W_out of its layer(s); returns the handle that undoes it.

    All checks run before the first write; a failure while writing restores every parameter.
    """
    pairs = _layer_deltas(session, update)
    deltas: dict[str, Tensor] = {}
    targets = []
    for layer, d in pairs:
        name, param, transposed = live_w_out(session, layer)
        d = (d.T if transposed else d).to(param.device, param.dtype).contiguous()
        deltas[name] = d
        targets.append((name, param, transposed))
    states = _REGISTRY.setdefault(session, {})
    handle = RestoreHandle(session, update, deltas)
    touched = []
    try:
        for name, param, transposed in targets:
            st = states.get(name)
            if st is None:
                st = _ParamState(param, transposed, param.detach().clone(), name=name)
                states[name] = st
            touched.append(st)
            st.active.append(handle)
            param.data.add_(deltas[name])
    except BaseException:
        for st in touched:
            if handle in st.active:
                st.active.remove(handle)
            _rewrite(st)
            if not st.active:
                states.pop(st.name, None)
        raise
    log.info("applied edit at %s", ", ".join(deltas))
    return handle


def active_edits(session: Session) -> list[RestoreHandle]:
    """Edits applied to `session` and not yet undone, in the order applied."""
    seen, out = set(), []
    for st in _REGISTRY.get(session, {}).values():
        for h in st.active:
            if id(h) not in seen:
                seen.add(id(h))
                out.append(h)
    return out


def original_weights(session: Session, name: str) -> Tensor | None:
    """The saved original bytes of parameter `name` while any edit is applied to it, else None."""
    st = _REGISTRY.get(session, {}).get(name)
    return None if st is None else st.original
