"""Tuned lens (Belrose et al. 2023): one affine translator per layer, trained to match the output.

For the residual h_l leaving block l (site ``resid_post``), the translator is

    T_l(h) = h + h A_l + b_l            (A_l [d_model d_model], b_l [d_model], both 0 at init)

so an untrained lens is the identity (the logit lens), and the lens reads
softmax(unembed(T_l(h))) with the model's own final norm and unembedding. Training minimises
the mean over corpus tokens and layers of KL(p_final || q_l), p_final the model's output
distribution, with SGD with Nesterov momentum as in the paper. Because the final RMSNorm
makes the logits scale-invariant in T_l(h), gradients have similar size at every layer.
At the last layer T = identity already gives q = p_final, the minimum, so training leaves
it (up to rounding) where it starts, as long as the step is below 2 / curvature: on
SmolLM2 lr = 0.5 made that minimum unstable (the last translator grew from 1e-6 to 1e-3 in
six steps and to norm 1.1 in 40); lr = 0.1 (default, linearly decayed) kept it below 1e-5 over
40 steps of 16 tokens, but over 200 steps of 32 it drifted to max |A| = 0.02 (KL 0.003 nats at
the last layer). So the last layer's translator is not trained: its gradient is zeroed, and it
stays exactly where it starts (the identity for a new lens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..corpus import Corpus
from ..errors import ShapeError, WorkbenchError
from ..hooks import Site
from ..moe import _windows
from ..session import Session
from ._store import check_identity, default_path, identity, load_tensors, save_tensors

__all__ = ["TunedLensConfig", "TunedLens", "init_tuned_lens", "train_tuned_lens", "load_tuned_lens",
           "collect_residuals", "kl_to_final", "estimate_tuned_seconds"]


@dataclass(frozen=True)
class TunedLensConfig:
    """Training settings.

    Args:
        steps: SGD steps. batch: tokens per step (every layer sees them all).
        lr: learning rate; momentum: Nesterov momentum. max_tokens: corpus tokens cached.
        window: corpus window length. seed: token sampling. clip: gradient-norm clip per step.
    """

    steps: int = 60
    batch: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    max_tokens: int = 2048
    window: int = 128
    seed: int = 0
    clip: float = 1.0

    def __post_init__(self):
        for k in ("steps", "batch", "max_tokens", "window"):
            if int(getattr(self, k)) < 1:
                raise ShapeError(f"{k}={getattr(self, k)!r} must be >= 1")
        if not self.lr > 0 or not 0 <= self.momentum < 1 or not self.clip > 0:
            raise ShapeError(f"lr={self.lr} must be > 0, momentum={self.momentum} in [0, 1), "
                             f"clip={self.clip} > 0")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> TunedLensConfig:
        return cls(**d)


@dataclass(frozen=True)
class TunedLens:
    """Translators A [layer d_model d_model], b [layer d_model] for `layers`, and provenance.

    Args:
        layers: the blocks the lens covers. A, b: stacked translator weights (row i = layers[i]).
        meta: model identity (see `_store.identity`) and training record.
    """

    layers: tuple[int, ...]
    A: Float[Tensor, "layer d_model d_model"]
    b: Float[Tensor, "layer d_model"]
    meta: dict = field(default_factory=dict)

    def _row(self, layer: int) -> int:
        if layer not in self.layers:
            raise WorkbenchError(f"layer={layer} has no tuned translator; this lens covers "
                                 f"{list(self.layers)}")
        return self.layers.index(layer)

    def translate(self, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """T_l(h) = h + h A_l + b_l."""
        i = self._row(layer)
        A, b = self.A[i].to(resid.device), self.b[i].to(resid.device)
        h = resid.float()
        return h + h @ A + b

    def logits(self, session: Session, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_vocab"]:
        return session.unembed(self.translate(resid, layer)).float()

    def linear(self, x: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        """The linear part x -> x + x A_l (no bias): how a direction written into the residual
        at block `layer` moves the translated state (T(h + x) = T(h) + x + x A_l)."""
        i = self._row(layer)
        v = x.float()
        return v + v @ self.A[i].to(v.device)

    def save(self, path: str | Path | None = None, session: Session | None = None) -> Path:
        """Save as safetensors (default: the cache path for `session`'s model)."""
        if path is None:
            if session is None:
                raise WorkbenchError("save() needs a path or the session (for the default path)")
            path = default_path(session, "tuned")
        meta = {**self.meta, "kind": "tuned", "layers": list(self.layers)}
        return save_tensors(path, {"A": self.A, "b": self.b}, meta)


def init_tuned_lens(session: Session, layers: Sequence[int] | None = None) -> TunedLens:
    """The identity lens (A = 0, b = 0) for `layers` (default all)."""
    layers = tuple(range(session.n_layers)) if layers is None else tuple(session.check_layer(x) for x in layers)
    if not layers:
        raise WorkbenchError("layers is empty; give at least one layer")
    d = session.d_model
    return TunedLens(layers, torch.zeros(len(layers), d, d), torch.zeros(len(layers), d),
                     {**identity(session), "trained_steps": 0})


@torch.no_grad()
def collect_residuals(session: Session, corpus: Corpus, layers: Sequence[int], max_tokens: int,
                      window: int = 128) -> tuple[Tensor, Tensor]:
    """resid_post of `layers` [n layer d_model] and of the last layer [n d_model], BOS dropped."""
    last = session.n_layers - 1
    sites = [Site("resid_post", x) for x in sorted(set(layers) | {last})]
    hs, fs = [], []
    for acts in _windows(session, corpus, sites, window, 4096, max_tokens):
        hs.append(torch.stack([acts[Site("resid_post", x)].float().cpu() for x in layers], 1))
        fs.append(acts[Site("resid_post", last)].float().cpu())
    if not hs:
        raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens")
    return torch.cat(hs)[:max_tokens], torch.cat(fs)[:max_tokens]


def kl_to_final(logits: Float[Tensor, "... d_vocab"], final_logp: Float[Tensor, "... d_vocab"]) -> Tensor:
    """KL(p_final || q) per row, in nats: sum p (log p - log q)."""
    logq = logits.float().log_softmax(-1)
    return (final_logp.exp() * (final_logp - logq)).sum(-1)


def _backward(session: Session, h: Tensor, target: Tensor, A: Tensor, b: Tensor) -> float:
    """Accumulate d/d(A, b) of sum over layers of mean KL(target || lens); returns that sum."""
    loss = 0.0
    for c in range(0, h.shape[1], 8):                                    # bounded memory
        with torch.enable_grad():
            hc = h[:, c : c + 8]
            t = hc + torch.einsum("bld,lde->ble", hc, A[c : c + 8]) + b[c : c + 8]
            part = kl_to_final(session.unembed(t), target[:, None]).mean(0).sum()
            part.backward()
        loss += float(part.detach())
    return loss


def estimate_tuned_seconds(session: Session, config: TunedLensConfig = TunedLensConfig(),
                           layers: Sequence[int] | None = None) -> float:
    """Seconds `train_tuned_lens` will take here, from one timed step (random residuals, the
    same work as a training step) and one timed forward of a `config.window` window (the
    faster of two tries each: the first pays for warm-up)."""
    n_layers = len(tuple(range(session.n_layers)) if layers is None else tuple(layers))
    d, dev = session.d_model, session.device
    h = torch.randn(config.batch, n_layers, d, device=dev)
    A = torch.zeros(n_layers, d, d, device=dev, requires_grad=True)
    b = torch.zeros(n_layers, d, device=dev, requires_grad=True)
    with torch.no_grad():
        target = session.unembed(h[:, -1]).float().log_softmax(-1)
    step = min(_seconds(lambda: _backward(session, h, target, A, b)) for _ in range(2))
    ids = torch.randint(session.d_vocab, (1, min(config.window, config.max_tokens)), device=dev)
    with torch.no_grad():
        forward = min(_seconds(lambda: session.model(ids)) for _ in range(2))   # first: warm-up
    return step * config.steps + forward * config.max_tokens / ids.shape[1]


def _seconds(fn) -> float:
    import time

    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_tuned_lens(session: Session, corpus: Corpus, config: TunedLensConfig = TunedLensConfig(),
                     layers: Sequence[int] | None = None, lens: TunedLens | None = None,
                     progress: bool = True) -> TunedLens:
    """Train translators on `corpus` to minimise KL(p_final || q_l) (module docstring)."""
    lens = lens or init_tuned_lens(session, layers)
    check_identity(lens.meta, session, "tuned lens")
    H, F = collect_residuals(session, corpus, lens.layers, config.max_tokens, config.window)
    dev = session.device
    A = lens.A.clone().to(dev).requires_grad_(True)
    b = lens.b.clone().to(dev).requires_grad_(True)
    opt = torch.optim.SGD([A, b], lr=config.lr, momentum=config.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / config.steps)
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    last = lens.layers.index(session.n_layers - 1) if session.n_layers - 1 in lens.layers else None
    for _ in tqdm(range(config.steps), desc="tuned lens", disable=not progress):
        idx = torch.randint(len(H), (min(config.batch, len(H)),), generator=gen)
        h, f = H[idx].to(dev), F[idx].to(dev)                            # [B L d], [B d]
        with torch.no_grad():
            target = session.unembed(f).float().log_softmax(-1)          # [B V]
        opt.zero_grad()
        loss = _backward(session, h, target, A, b)
        if last is not None and A.grad is not None and b.grad is not None:
            A.grad[last] = 0.0                     # the output layer's optimum is the identity
            b.grad[last] = 0.0
        torch.nn.utils.clip_grad_norm_([A, b], config.clip)
        opt.step()
        sched.step()
        losses.append(float(loss) / len(lens.layers))
    meta = {**lens.meta, "trained_steps": int(lens.meta.get("trained_steps", 0)) + config.steps,
            "config": config.to_dict(), "corpus": corpus.name, "n_tokens": len(H),
            "final_loss": losses[-1], "first_loss": losses[0]}
    return TunedLens(lens.layers, A.detach().cpu(), b.detach().cpu(), meta)


def load_tuned_lens(session: Session, path: str | Path | None = None, layers: Sequence[int] | None = None) -> TunedLens:
    """Load a tuned lens for `session`'s model (refusing one trained for another model).

    `path`: a file, or None for the default cache path of the session's model. `layers`:
    keep only these (each must be in the file).
    """
    path = default_path(session, "tuned") if path is None else Path(path)
    tensors, meta = load_tensors(path, "tuned lens")
    if meta.get("kind") != "tuned":
        raise WorkbenchError(f"{str(path)!r} holds a {meta.get('kind')!r} lens, not a tuned lens")
    check_identity(meta, session, f"tuned lens {str(path)!r}")
    lens = TunedLens(tuple(meta["layers"]), tensors["A"], tensors["b"], meta)
    if layers is None:
        return lens
    rows = [lens._row(session.check_layer(x)) for x in layers]
    return TunedLens(tuple(lens.layers[i] for i in rows), lens.A[rows], lens.b[rows], meta)
