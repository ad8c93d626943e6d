"""The Jacobian lens of TransformerLens 4.3 (tools/analysis/jacobian_lens.py), in the session.

TransformerLens fits J_l = E_prompt[ mean_t sum_{t' >= t} d h_final,t' / d h_l,t ] (output of
block l to the final block's output, pre final norm) and reads lens(h_l) =
W_U norm(J_l h_l). We call its `JacobianLens.fit` and `JacobianLens.transport` unchanged;
this module only

- tokenizes as the session does: `fit` calls ``bridge.to_tokens``, which follows
  ``cfg.default_prepend_bos`` (True for SmolLM2 in the bridge, while the session's policy is
  no BOS), so the flag is set to the session's policy for the fit and restored after;
- stores the matrices as safetensors with the model identity (TransformerLens's own `save`
  writes a pickle ``.pt``; the workbench loads no pickles) and rebuilds a `JacobianLens` on
  load, checked with its own `validate_model` and ours (`LensModelMismatch`);
- reads the last layer (never fitted: its transport is the identity) as the logit lens.

Our sessions boot the bridge with raw Hugging Face weights (no compatibility mode, no
processed weights), which is what `JacobianLens` requires; it refuses anything else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._types import Float, Tensor
from ..errors import EmptyPromptError, WorkbenchError
from ..session import Session
from ._store import check_identity, default_path, identity, load_tensors, save_tensors

__all__ = ["JLens", "fit_jacobian_lens", "load_jacobian_lens", "estimate_jacobian_seconds"]


@contextlib.contextmanager
def _session_bos(session: Session) -> Iterator[None]:
    cfg = session.model.cfg
    old = cfg.default_prepend_bos
    cfg.default_prepend_bos = bool(session.prepend_bos)
    try:
        yield
    finally:
        cfg.default_prepend_bos = old


@runtime_checkable
class JacobianTransport(Protocol):
    """What `JLens` uses of TransformerLens' `JacobianLens` (imported lazily: it loads slowly)."""

    jacobians: dict[int, Tensor]
    n_prompts: int
    metadata: dict[str, Any]

    @property
    def source_layers(self) -> list[int]: ...

    def transport(self, residual: Tensor, layer: int) -> Tensor: ...


@dataclass(frozen=True)
class JLens:
    """A fitted TransformerLens `JacobianLens` bound to the identity of the model it was fit on.

    Args:
        lens: the TransformerLens object (transport matrices J_l for its source layers).
        meta: model identity (see `_store.identity`) and fit provenance.
    """

    lens: JacobianTransport
    meta: dict

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.lens.source_layers)

    def translate(self, resid: Float[Tensor, "... d_model"], layer: int, n_layers: int) -> Float[Tensor, "... d_model"]:
        """J_l h (TransformerLens `transport`); the identity at the last layer."""
        if layer == n_layers - 1:
            return resid.float()
        if layer not in self.lens.jacobians:
            raise WorkbenchError(f"layer={layer} has no Jacobian transport; this lens covers "
                                 f"{list(self.layers)} (and {n_layers - 1} as the identity)")
        return self.lens.transport(resid, layer)

    def logits(self, session: Session, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_vocab"]:
        return session.unembed(self.translate(resid, layer, session.n_layers)).float()

    def linear(self, x: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """J_l x: the Jacobian lens is linear already (the identity at the last layer)."""
        return self.translate(x, layer, int(self.meta["n_layers"]))

    def save(self, path: str | Path | None = None, session: Session | None = None) -> Path:
        if path is None:
            if session is None:
                raise WorkbenchError("save() needs a path or the session (for the default path)")
            path = default_path(session, "jacobian")
        tensors = {f"J.{k}": v for k, v in self.lens.jacobians.items()}
        meta = {**self.meta, "kind": "jacobian", "n_prompts": self.lens.n_prompts,
                "tl_metadata": self.lens.metadata}
        return save_tensors(path, tensors, meta)


def fit_jacobian_lens(session: Session, prompts: Sequence[str], corpus: str = "prompts",
                      layers: Sequence[int] | None = None, dim_batch: int = 16,
                      max_seq_len: int = 128, skip_first_positions: int | None = None,
                      progress: bool = True) -> JLens:
    """Fit with TransformerLens `JacobianLens.fit` (progress bar over prompts).

    Cost: one forward and ceil(d_model / dim_batch) backward passes of dim_batch copies of each
    prompt, i.e. about d_model backward token-passes per prompt token; prompts must be longer
    than skip_first_positions + 1 tokens (TransformerLens default 16).
    """
    from transformer_lens.tools.analysis.jacobian_lens import (
        DEFAULT_SKIP_FIRST_POSITIONS,
        JacobianLens,
    )

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise EmptyPromptError("prompts=[] is empty; give at least one prompt")
    if layers is not None:
        layers = [session.check_layer(x) for x in layers]
        if session.n_layers - 1 in layers:
            raise WorkbenchError(f"layer {session.n_layers - 1} is the last layer; the Jacobian lens "
                                 f"reads it as the identity; fit layers 0..{session.n_layers - 2}")
    skip = DEFAULT_SKIP_FIRST_POSITIONS if skip_first_positions is None else skip_first_positions
    longest = max(len(session.encode(p)) for p in prompts)
    if min(longest, max_seq_len) <= skip + 1:
        raise EmptyPromptError(f"every prompt is at most {min(longest, max_seq_len)} tokens; the "
                               f"Jacobian lens needs more than skip_first_positions + 1 = {skip + 1}")
    try:
        with _session_bos(session):
            lens = JacobianLens.fit(session.model, prompts, corpus=corpus, source_layers=layers,
                                    dim_batch=dim_batch, max_seq_len=max_seq_len,
                                    skip_first_positions=skip, show_progress=progress)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"TransformerLens JacobianLens.fit refused this session: {exc}") from exc
    return JLens(lens, {**identity(session), "prepend_bos": bool(session.prepend_bos)})


def estimate_jacobian_seconds(session: Session, n_prompts: int, seq_len: int = 128,
                              dim_batch: int = 16) -> float:
    """Seconds `fit_jacobian_lens` will take here: per prompt one forward of `dim_batch` copies
    and ceil(d_model / dim_batch) backward passes (each about two forwards), from one timed
    forward of [dim_batch, seq_len] tokens with gradients on (the faster of two: the first pays
    for warm-up)."""
    import time

    import torch

    ids = torch.randint(session.d_vocab, (dim_batch, seq_len), device=session.device)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.enable_grad():
            session.model(ids)
        times.append(time.perf_counter() - t0)
    forward = min(times)
    return n_prompts * forward * (1 + 2 * -(-session.d_model // dim_batch))


def load_jacobian_lens(session: Session, path: str | Path | None = None) -> JLens:
    """Load a Jacobian lens saved by `JLens.save`, refusing one fit on another model."""
    from transformer_lens.tools.analysis.jacobian_lens import JacobianLens

    path = default_path(session, "jacobian") if path is None else Path(path)
    tensors, meta = load_tensors(path, "Jacobian lens")
    if meta.get("kind") != "jacobian":
        raise WorkbenchError(f"{str(path)!r} holds a {meta.get('kind')!r} lens, not a Jacobian lens")
    check_identity(meta, session, f"Jacobian lens {str(path)!r}")
    jac = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("J.")}
    lens = JacobianLens(jac, n_prompts=int(meta.get("n_prompts", 0)), d_model=session.d_model,
                        metadata=meta.get("tl_metadata") or {})
    try:
        lens.validate_model(session.model)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"TransformerLens refused Jacobian lens {str(path)!r}: {exc}") from exc
    return JLens(lens, meta)
