"""One entry point for every lens: logits of a residual read at a layer, and KL to the output.

    lens(session, resid, layer, kind="logit" | "tuned" | "jacobian") -> [..., d_vocab] logits

`resid` is the residual leaving block `layer` (site ``resid_post``). ``logit`` is
unembed(h) (final norm + W_U, `Session.unembed`); ``tuned`` is unembed(T_l(h)) and
``jacobian`` is unembed(J_l h), with the lens loaded from the default cache path of the
session's model unless a loaded reader is passed. Faces that read many layers should call
`load_lens` once and use `reader.logits(session, resid, layer)`.

Directions (a value vector v_i, a sub-update m_i v_i, an SAE decoder row, ROME's v* - v) are
not residual states: they are what a component adds to the residual. `direction_logits` reads
one written inside block `layer` through the lens's *linear part* only,

    logit: unembed(x)      tuned: unembed(x + x A_l)  (no b_l)      jacobian: unembed(J_l x)

because an affine map sends h + x to T(h) + L(x): the bias belongs to the state, and what the
direction adds is L(x). With ``lens="logit"`` it is exactly ``session.unembed(x)``, the
workbench's reading of directions (`workbench.vocab`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..corpus import Corpus
from ..errors import ShapeError, WorkbenchError, choices
from ..session import Session
from ._store import check_identity
from .jacobian import JLens, load_jacobian_lens
from .tuned import TunedLens, collect_residuals, kl_to_final, load_tuned_lens

__all__ = ["LENS_KINDS", "LogitReader", "load_lens", "as_reader", "kind_of", "lens", "direction_logits", "LensKL",
           "lens_kl"]

LENS_KINDS = ("logit", "tuned", "jacobian")


@runtime_checkable
class LensReader(Protocol):
    """A loaded lens: `LogitReader`, `TunedLens` or `JLens`."""

    def logits(self, session: Session, resid: Float[Tensor, "... d_model"],
               layer: int) -> Float[Tensor, "... d_vocab"]: ...

    def linear(self, x: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]: ...


class LogitReader:
    """The logit lens: unembed(h)."""

    meta: dict = {"kind": "logit"}

    def logits(self, session: Session, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_vocab"]:
        return session.unembed(resid).float()

    def linear(self, x: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """The identity (x unchanged, dtype included)."""
        return x


def load_lens(session: Session, kind: str = "logit", path: str | Path | None = None) -> LensReader:
    """A reader with `.logits(session, resid, layer)` for `kind` (tuned/jacobian from `path`
    or the default cache path of the session's model)."""
    if kind == "logit":
        return LogitReader()
    if kind == "tuned":
        return load_tuned_lens(session, path)
    if kind == "jacobian":
        return load_jacobian_lens(session, path)
    raise WorkbenchError(f"lens kind={kind!r} is unknown; choose one of {choices(LENS_KINDS)}")


def as_reader(session: Session, lens: str | LensReader = "logit",
              path: str | Path | None = None) -> LensReader:
    """`lens` itself when it is a loaded reader (checked against the session's model:
    `LensModelMismatch` for a lens made for another), else `load_lens(session, lens, path)`."""
    if isinstance(lens, str):
        return load_lens(session, lens, path)
    if not isinstance(lens, LensReader):
        raise WorkbenchError(f"lens={lens!r} is neither a lens kind ({choices(LENS_KINDS)}) nor a "
                             "loaded lens (load_lens)")
    meta = getattr(lens, "meta", None)
    if isinstance(meta, dict) and "model_name" in meta:    # a lens made for another model: refused
        check_identity(meta, session, f"{kind_of(lens)} lens")
    return lens


def kind_of(lens: str | LensReader) -> str:
    """``"logit"``, ``"tuned"`` or ``"jacobian"`` for a kind or a loaded reader."""
    if isinstance(lens, str):
        return lens
    if isinstance(lens, TunedLens):
        return "tuned"
    if isinstance(lens, JLens):
        return "jacobian"
    return str(getattr(lens, "meta", {}).get("kind", "logit"))


def direction_logits(session: Session, x: Float[Tensor, "... d_model"], layer: int,
                     lens: str | LensReader = "logit") -> Float[Tensor, "... d_vocab"]:
    """Logits of direction(s) `x` written inside block `layer`, through the lens's linear part.

    unembed(L_l x) with L_l the identity (logit), x -> x + x A_l (tuned, bias b_l left out) or
    x -> J_l x (jacobian): see the module docstring. Not `.float()`-cast, so the logit reading
    is bit for bit ``session.unembed(x)``.
    """
    session.check_layer(layer)
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[-1] != session.d_model:
        raise ShapeError(f"x has shape {tuple(getattr(x, 'shape', ()))}; directions need last dim "
                         f"d_model={session.d_model}")
    reader = as_reader(session, lens)
    with torch.no_grad():
        return session.unembed(reader.linear(x, layer))


def lens(session: Session, resid: Float[Tensor, "... d_model"], layer: int, kind: str = "logit",
         reader: LensReader | None = None, path: str | Path | None = None) -> Float[Tensor, "... d_vocab"]:
    """Logits of `resid` (output of block `layer`) through the chosen lens."""
    session.check_layer(layer)
    if resid.shape[-1] != session.d_model:
        raise ShapeError(f"resid has last dim {resid.shape[-1]}; the model has d_model={session.d_model}")
    reader = reader if reader is not None else load_lens(session, kind, path)
    with torch.no_grad():
        return reader.logits(session, resid, layer)


@dataclass(frozen=True)
class LensKL:
    """Mean KL(p_final || q_lens) in nats per layer, per lens kind, on held tokens.

    Args:
        layers: blocks read. kl: kind -> [layer] mean KL. n_tokens: tokens averaged.
    """

    layers: tuple[int, ...]
    kl: dict[str, tuple[float, ...]]
    n_tokens: int
    corpus: str

    def rows(self) -> list[dict]:
        return [{"layer": layer, **{k: v[i] for k, v in self.kl.items()}} for i, layer in enumerate(self.layers)]

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "kl": {k: list(v) for k, v in self.kl.items()},
                "n_tokens": self.n_tokens, "corpus": self.corpus}


@torch.no_grad()
def lens_kl(session: Session, corpus: Corpus, readers: Mapping[str, LensReader] | Sequence[str] = ("logit",),
            layers: Sequence[int] | None = None, max_tokens: int = 512, window: int = 128,
            chunk: int = 64) -> LensKL:
    """KL to the final distribution per layer for each lens (readers by kind, or kinds to load)."""
    if not isinstance(readers, Mapping):
        readers = {k: load_lens(session, k) for k in readers}
    if not readers:
        raise WorkbenchError("readers is empty; give at least one lens kind")
    layers = tuple(range(session.n_layers)) if layers is None else tuple(session.check_layer(x) for x in layers)
    H, F = collect_residuals(session, corpus, layers, max_tokens, window)
    sums = {k: torch.zeros(len(layers), dtype=torch.float64) for k in readers}
    for i in tqdm(range(0, len(H), chunk), desc="lens KL", leave=False):
        f = session.unembed(F[i : i + chunk].to(session.device)).float().log_softmax(-1)
        for li, layer in enumerate(layers):
            h = H[i : i + chunk, li].to(session.device)
            for kind, r in readers.items():
                sums[kind][li] += float(kl_to_final(r.logits(session, h, layer), f).sum())
    n = len(H)
    return LensKL(layers, {k: tuple((v / n).tolist()) for k, v in sums.items()}, n, corpus.name)
