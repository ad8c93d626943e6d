"""Transcoders: a sparse replacement of one layer's FFN (Dunefsky et al. 2024; circuit-tracer).

    pre   = (x - b_dec_in) W_enc + b_enc          x: the FFN's normalised input (site mlp_in:l)
    f     = ReLU(TopK_k(pre))                     [... d_tc], L0 <= k
    y^    = f W_dec + b_dec (+ x W_skip)          target: the raw FFN output (site mlp_out:l)

The optional affine skip W_skip [d_model d_model] carries the FFN's linear part, so latents
spend their capacity on the rest. Trained by `train_transcoder` on corpus activations with
Adam on the summed squared error of y / s_y (s_y the target's spread per dimension, folded back
into W_dec, b_dec, W_skip at the end); FVU = MSE / variance of y. Saved as transcoder.json (config,
with the model's name and layer) + transcoder.safetensors; `load_transcoder(dir, session,
layer)` refuses one trained for another model, layer or width (`TranscoderMismatch`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..capture import capture_tokens
from ..errors import NonFiniteError, WorkbenchError
from ..hooks import Site
from ..session import Session, TokenBatch
from .config import SAEConfigError

log = logging.getLogger(__name__)

__all__ = ["TranscoderConfig", "Transcoder", "TranscoderMismatch", "TranscoderResult", "train_transcoder",
           "save_transcoder", "load_transcoder", "check_transcoder"]

CONFIG, WEIGHTS = "transcoder.json", "transcoder.safetensors"


class TranscoderMismatch(WorkbenchError):
    """A transcoder trained for another model, layer or width than the one it is used with."""


@dataclass
class TranscoderConfig:
    """Shape and provenance of one transcoder.

    Args:
        d_model: width of the FFN input and output.
        d_tc: number of latents.
        k: active latents per token (TopK).
        layer: the FFN it replaces (input mlp_in:layer, target mlp_out:layer).
        skip: learn an affine skip x W_skip.
        model: the session's model name (checked on use).
    """

    d_model: int = 576
    d_tc: int = 576 * 8
    k: int = 32
    layer: int = 0
    skip: bool = True
    model: str = ""

    def __post_init__(self):
        for name in ("d_model", "d_tc", "k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SAEConfigError(f"{name}={v!r} must be a positive integer")
        if self.k > self.d_tc:
            raise SAEConfigError(f"k={self.k} is out of range; valid range is 1..{self.d_tc} (d_tc)")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise SAEConfigError(f"layer={self.layer!r} must be a non-negative integer")

    @property
    def input_site(self) -> Site:
        return Site("mlp_in", self.layer)

    @property
    def output_site(self) -> Site:
        return Site("mlp_out", self.layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranscoderConfig:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise SAEConfigError(f"unknown transcoder config keys {bad}; valid: {sorted(names)}")
        return cls(**d)


class Transcoder(nn.Module):
    """TopK transcoder; see the module docstring for the maths."""

    def __init__(self, cfg: TranscoderConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_model, cfg.d_tc
        g = torch.Generator().manual_seed(0)
        w = torch.randn(n, d, generator=g) / math.sqrt(d)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.zeros(n, d))  # starts at y^ = b_dec (FVU 1); Adam grows it
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.b_dec_in = nn.Parameter(torch.zeros(d))
        self.W_skip = nn.Parameter(torch.zeros(d, d)) if cfg.skip else None

    def pre_acts(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        return (x.to(self.W_enc.dtype) - self.b_dec_in) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def decode(self, codes: Float[Tensor, "... d_tc"], x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        out = codes @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            out = out + x.to(self.W_skip.dtype) @ self.W_skip
        return out

    def forward(self, x: Float[Tensor, "... d_model"]) -> tuple[Tensor, Tensor]:
        """(prediction of the FFN output, codes)."""
        codes = self.encode(x)
        return self.decode(codes, x), codes


@dataclass(frozen=True)
class TranscoderResult:
    """A trained transcoder with its history (per logged step: tokens, mse, fvu, l0) and the
    held-out FVU and L0 of the last batch seen."""

    transcoder: Transcoder
    history: list[dict]
    tokens: int
    seconds: float
    fvu: float
    l0: float


def _pairs(session: Session, corpus, layer: int, window: int, tokens_per_batch: int, max_tokens: int | None):
    """(x, y) = (mlp_in, mlp_out) at `layer` for every corpus token but BOS, in batches."""
    sites = [Site("mlp_in", layer), Site("mlp_out", layer)]
    for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch, max_tokens=max_tokens,
                             progress=False):
        n = wb.tokens.shape[1]
        batch = TokenBatch(wb.tokens, torch.full((wb.tokens.shape[0],), n, device=wb.tokens.device))
        cap = capture_tokens(session, batch, sites)
        start = int(wb.bos)
        yield (cap[sites[0]][:, start:].reshape(-1, session.d_model).float(),
               cap[sites[1]][:, start:].reshape(-1, session.d_model).float())


def train_transcoder(session: Session, corpus, cfg: TranscoderConfig, *, total_tokens: int = 200_000, batch_size: int = 1024,
                     lr: float = 1e-3, window: int = 64, tokens_per_forward: int = 4096, seed: int = 0,
                     out_dir: str | Path | None = None, progress: bool = True) -> TranscoderResult:
    """Train a transcoder for `cfg.layer`'s FFN on `corpus` (the entry `workbench sae train
    --transcoder` can call). Streams activations; one pass over `total_tokens` tokens."""
    session.check_layer(cfg.layer)
    if cfg.d_model != session.d_model:
        raise TranscoderMismatch(f"d_model={cfg.d_model} but model {session.name!r} has d_model={session.d_model}")
    cfg = TranscoderConfig.from_dict({**cfg.to_dict(), "model": cfg.model or session.name})
    torch.manual_seed(seed)
    tc = Transcoder(cfg).to(session.device)
    opt = torch.optim.Adam(tc.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    t0, tokens, step = time.perf_counter(), 0, 0
    first, sy = True, 1.0
    bar = tqdm(total=total_tokens, unit="tok", desc=f"transcoder L{cfg.layer}", disable=not progress)
    last = (math.nan, math.nan)
    try:
        for x_all, y_all in _pairs(session, corpus, cfg.layer, window, tokens_per_forward, total_tokens):
            if not (torch.isfinite(x_all).all() and torch.isfinite(y_all).all()):
                raise NonFiniteError(f"activations at layer {cfg.layer} hold NaN or infinite values")
            if first:  # targets are trained in units of their spread sy; folded back at the end
                with torch.no_grad():
                    sy = float((y_all - y_all.mean(0)).pow(2).sum(-1).mean().div(cfg.d_model).sqrt().clamp_min(1e-12))
                    tc.b_dec.copy_(y_all.mean(0) / sy)
                    tc.b_dec_in.copy_(x_all.mean(0))
                first = False
            y_all = y_all / sy
            perm = torch.randperm(len(x_all), generator=gen).to(x_all.device)
            for i in range(0, len(perm) - batch_size + 1, batch_size):
                x, y = x_all[perm[i:i + batch_size]], y_all[perm[i:i + batch_size]]
                pred, codes = tc(x)
                mse = (pred - y).pow(2).sum(-1).mean()
                opt.zero_grad(set_to_none=True)
                mse.backward()
                opt.step()
                step += 1
                tokens += len(x)
                bar.update(len(x))
                if step % 20 == 0:
                    with torch.no_grad():
                        var = (y - y.mean(0)).pow(2).sum(-1).mean()
                        fvu = float(mse / var.clamp_min(1e-12))
                        l0 = float((codes > 0).float().sum(-1).mean())
                    history.append({"step": step, "tokens": tokens, "mse": mse.item(), "fvu": fvu, "l0": l0})
                    bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{l0:.1f}")
                if tokens >= total_tokens:
                    break
            last = (x_all, y_all)
            if tokens >= total_tokens:
                break
    finally:
        bar.close()
    if not first:
        with torch.no_grad():
            for p in (tc.W_dec, tc.b_dec) + ((tc.W_skip,) if tc.W_skip is not None else ()):
                p.mul_(sy)
            if isinstance(last[1], Tensor):
                last = (last[0], last[1] * sy)
    tc.eval()
    fvu, l0 = math.nan, math.nan
    if isinstance(last[0], Tensor):
        with torch.no_grad():
            pred, codes = tc(last[0])
            y = last[1]
            fvu = float((pred - y).pow(2).sum(-1).mean() / (y - y.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12))
            l0 = float((codes > 0).float().sum(-1).mean())
    if out_dir is not None:
        save_transcoder(tc, out_dir)
    return TranscoderResult(tc, history, tokens, time.perf_counter() - t0, fvu, l0)


def save_transcoder(tc: Transcoder, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tc.state_dict().items()}, str(d / WEIGHTS))
    (d / CONFIG).write_text(json.dumps(tc.cfg.to_dict(), indent=2), encoding="utf-8")
    return d


def check_transcoder(session: Session, tc: Transcoder, layer: int | None = None) -> Transcoder:
    """Raise TranscoderMismatch unless `tc` was trained for `session`'s model (and `layer`)."""
    c = tc.cfg
    if c.model and c.model != session.name:
        raise TranscoderMismatch(f"transcoder was trained on model {c.model!r}, not {session.name!r}")
    if c.d_model != session.d_model:
        raise TranscoderMismatch(f"transcoder reads d_model={c.d_model}; model {session.name!r} has "
                                 f"d_model={session.d_model}")
    session.check_layer(c.layer)
    if layer is not None and c.layer != layer:
        raise TranscoderMismatch(f"transcoder replaces layer {c.layer}'s FFN, not layer {layer}")
    return tc


def load_transcoder(directory: str | Path, session: Session | None = None, layer: int | None = None,
                    device: str | torch.device = "cpu") -> Transcoder:
    """Load transcoder.json + transcoder.safetensors; checked against `session` when given."""
    from safetensors.torch import load_file

    from .io import SAEFileError

    d = Path(directory)
    if not (d / CONFIG).exists() or not (d / WEIGHTS).exists():
        raise SAEFileError(f"{str(d)!r} is not a transcoder directory ({CONFIG} + {WEIGHTS})")
    cfg = TranscoderConfig.from_dict(json.loads((d / CONFIG).read_text(encoding="utf-8")))
    tc = Transcoder(cfg)
    tensors = load_file(str(d / WEIGHTS))
    want = tc.state_dict()
    if set(tensors) != set(want) or any(tensors[k].shape != want[k].shape for k in want):
        raise SAEFileError(f"{str(d / WEIGHTS)!r} holds {sorted(tensors)} with shapes that do not fit the config")
    tc.load_state_dict(tensors)
    if session is not None:
        check_transcoder(session, tc, layer)
    return tc.to(device).eval()
