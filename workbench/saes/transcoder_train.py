"""Train transcoders for several layers from one activation stream, and measure them.

One forward per corpus chunk captures (x, y) = (mlp_in, mlp_out) at every requested layer (the
forward stops after the highest), so six layers cost one harvest. Windows come in the seeded
order of `stream.window_order`: the first ones are held out (`eval_tokens`), training reads the
next `total_tokens / epochs` tokens, replayed `epochs` times. Position 0 of each window, the
attention sink with its massive activations, is left out (`skip_first_position`).

Each step is sparse in k, as `topk_sparse` for SAEs: the dense pre-activations (no autograd)
choose the k latents, only the picked ones carry gradient (into W_enc, b_enc, b_dec_in; on CUDA
dW_enc by one GEMM, `topk_sparse.gemm_dtype`), and the decoder reads k rows (`sparse_decode`:
Triton on CUDA, `embedding_bag` otherwise); the skip x W_skip is a dense product. Loss on the
target in units of its spread s_y (folded back at the end):

    L = ||y / s_y - y^||^2 + alpha AuxK,   AuxK = ||e - e^_dead||^2 / ||e||^2,  e = y / s_y - y^

with e^_dead the top `aux_k` dead latents' reconstruction of e (dead: silent for
`dead_after_tokens` tokens). The learning rate decays linearly over the last `decay_fraction`.

Measured on the held-out windows (`transcoder_metrics`): FVU of y, L0, dead latents, and loss
recovered (CE_zero - CE_tc) / (CE_zero - CE_clean) on `ce_tokens` of them, the transcoder's
output (or zero) in place of the FFN's at every position but the first (`splice_transcoder`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..capture import capture_tokens
from ..errors import NonFiniteError
from ..hooks import Site
from ..session import Session, TokenBatch
from .config import SAEConfigError
from .metrics import next_token_ce
from .sparse_decode import sparse_decode
from .stream import window_order
from .topk_sparse import _PickedPre, gemm_dtype
from .train import lr_factor
from .transcoder import (
    Transcoder,
    TranscoderConfig,
    TranscoderMismatch,
    save_transcoder,
    splice_transcoder,
)

log = logging.getLogger(__name__)

__all__ = ["TranscoderTrainConfig", "TranscoderResult", "TranscoderMetrics", "train_transcoders",
           "train_transcoder", "transcoder_metrics", "transcoder_step"]


@dataclass(frozen=True)
class TranscoderTrainConfig:
    """How transcoders are trained and measured.

    Args:
        total_tokens: training vectors per transcoder, repeats included.
        epochs: passes over the harvested tokens (total_tokens / epochs distinct tokens).
        batch_size: vectors per Adam step. lr: Adam's learning rate.
        decay_fraction: the learning rate falls linearly to 0 over this last share of steps.
        window: tokens per corpus window. tokens_per_forward: tokens per harvest forward.
        eval_tokens: held-out vectors for FVU, L0 and dead latents (0: none).
        ce_tokens: held-out tokens for loss recovered (0: skip; it costs 1 + 2 x layers forwards).
        skip_first_position: leave out each window's first token (the attention sink).
        aux_k, aux_coefficient, dead_after_tokens: AuxK (aux_k = 0 turns it off).
        seed: window order and shuffling.
    """

    total_tokens: int = 200_000
    epochs: int = 1
    batch_size: int = 1024
    lr: float = 1e-3
    decay_fraction: float = 0.2
    window: int = 64
    tokens_per_forward: int = 4096
    eval_tokens: int = 2048
    ce_tokens: int = 1024
    skip_first_position: bool = True
    aux_k: int = 256
    aux_coefficient: float = 1 / 32
    dead_after_tokens: int = 50_000
    seed: int = 0

    def __post_init__(self):
        for name, lo in (("total_tokens", 1), ("epochs", 1), ("batch_size", 1), ("window", 2),
                         ("tokens_per_forward", 1), ("eval_tokens", 0), ("ce_tokens", 0), ("aux_k", 0),
                         ("dead_after_tokens", 1), ("seed", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise SAEConfigError(f"{name}={v!r} must be an integer >= {lo}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise SAEConfigError(f"lr={self.lr!r} must be a positive number")
        if not 0 <= self.decay_fraction <= 1:
            raise SAEConfigError(f"decay_fraction={self.decay_fraction!r} is out of range; valid range is [0, 1]")
        if self.aux_coefficient < 0:
            raise SAEConfigError(f"aux_coefficient={self.aux_coefficient!r} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TranscoderMetrics:
    """One transcoder on held-out tokens (NaN where not measured).

    Args:
        layer: the FFN replaced. n: held-out vectors. fvu: FVU of the FFN output. l0: mean
        active latents. dead: latents never active on them. ce_clean, ce_tc, ce_zero: next-token
        cross-entropy (nats) with the FFN left alone, replaced by the transcoder, zeroed.
        loss_recovered: (ce_zero - ce_tc) / (ce_zero - ce_clean). ce_tokens: tokens scored.
    """

    layer: int
    n: int
    fvu: float
    l0: float
    dead: int
    ce_clean: float = math.nan
    ce_tc: float = math.nan
    ce_zero: float = math.nan
    loss_recovered: float = math.nan
    ce_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TranscoderResult:
    """A trained transcoder with its history (per logged step: step, tokens, lr, mse, fvu, l0,
    dead), the vectors it saw, the wall time of the run it was part of, and its held-out
    metrics (None without held-out tokens). `fvu` / `l0`: held-out when measured, else the
    last logged training values."""

    transcoder: Transcoder
    history: list[dict]
    tokens: int
    seconds: float
    fvu: float
    l0: float
    metrics: TranscoderMetrics | None = field(default=None)


@dataclass(frozen=True)
class _Step:
    pred: Tensor
    idx: Tensor
    vals: Tensor
    aux_pred: Tensor | None


def transcoder_step(tc: Transcoder, x: Float[Tensor, "B d_model"], dead: Tensor | None = None, aux_k: int = 0,
                    n_dead: int | None = None, gemm: bool | None = None) -> _Step:
    """The TopK forward of one training step, sparse in the decoder and the encoder gradient (see
    the module docstring); equal in value and gradients to `Transcoder.forward` + autograd.
    `gemm`: dW_enc by one dense GEMM (default: on CUDA, `topk_sparse.gemm_dtype`)."""
    k = tc.cfg.k
    with torch.no_grad():
        pre = tc.pre_acts(x)
        top_v, top_i = pre.topk(k, dim=-1)
        idx, picked_vals, valid = top_i, top_v, None
        n_dead = int(dead.sum()) if dead is not None and n_dead is None else n_dead
        n_aux = 0
        if dead is not None and aux_k > 0 and n_dead:
            aux_v, aux_i = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, n_dead, tc.cfg.d_tc), dim=-1)
            n_aux = aux_i.shape[1]
            idx, valid = torch.cat([top_i, aux_i], 1), aux_v > float("-inf")
            picked_vals = torch.cat([top_v, pre.gather(-1, aux_i)], 1)
    picked = _PickedPre.apply(x, tc.b_dec_in, tc.W_enc, tc.b_enc, idx, picked_vals.float(),
                              gemm_dtype(x, tc.W_enc, gemm=gemm), None)
    act = torch.relu(picked)
    vals = act[:, :k]
    pred = sparse_decode(top_i, vals, tc.W_dec) + tc.b_dec
    if tc.W_skip is not None:
        pred = pred + x @ tc.W_skip
    aux = None
    if n_aux and valid is not None:
        # embedding_bag: AuxK's pick count moves with the dead count (a Triton compile per count)
        aux = sparse_decode(idx[:, k:], act[:, k:] * valid, tc.W_dec, triton=False)
    return _Step(pred, top_i, vals.detach(), aux)


class _Trainer:
    """One layer's transcoder, optimiser, dead-latent clock and history."""

    def __init__(self, cfg: TranscoderConfig, train: TranscoderTrainConfig, total_steps: int, device):
        self.tc = Transcoder(cfg).to(device)
        self.train, self.total_steps = train, total_steps
        self.opt = torch.optim.Adam(self.tc.parameters(), lr=train.lr, fused=True)  # one kernel, CPU or CUDA
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda st: lr_factor(st, total_steps, 0, train.decay_fraction))
        self.since = torch.zeros(cfg.d_tc, dtype=torch.long, device=device)
        self.sy = 0.0
        self.step = self.tokens = self.n_dead = 0
        self.history: list[dict] = []
        self.rest: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def start(self, x: Tensor, y: Tensor, gen: torch.Generator) -> None:
        """Initialise from the first chunk: the skip as the ridge regression of y on x, each
        latent as one chunk token (encoder: its centred input's direction; decoder: the part of
        its target the skip misses, times the one factor that fits the chunk best)."""
        tc = self.tc
        xm, ym = x.mean(0), y.mean(0)
        self.sy = float((y - ym).pow(2).sum(-1).mean().div(y.shape[1]).sqrt().clamp_min(1e-12))
        xc, yc = x - xm, (y - ym) / self.sy
        tc.b_dec_in.copy_(xm)
        resid = yc
        if tc.W_skip is not None:
            gram = xc.T @ xc
            lam = 1e-3 * float(gram.diagonal().mean()) + 1e-12
            tc.W_skip.copy_(torch.linalg.solve(gram + lam * torch.eye(len(gram), device=x.device), xc.T @ yc))
            resid = yc - xc @ tc.W_skip
        tc.b_dec.copy_(ym / self.sy - (xm @ tc.W_skip if tc.W_skip is not None else 0.0))
        pick = torch.randint(len(x), (tc.cfg.d_tc,), generator=gen).to(x.device)
        tc.W_enc.copy_((xc[pick] / xc[pick].norm(dim=-1, keepdim=True).clamp_min(1e-12)).T)
        tc.b_enc.zero_()
        tc.W_dec.copy_(resid[pick])
        codes = tc.encode(x)
        rec = codes @ tc.W_dec
        tc.W_dec.mul_(float((rec * resid).sum() / rec.pow(2).sum().clamp_min(1e-12)))

    def feed(self, x: Tensor, y: Tensor, gen: torch.Generator) -> int:
        """Train on a chunk (plus what the last chunk left over); returns vectors used."""
        if self.rest is not None:
            x, y = torch.cat([self.rest[0], x]), torch.cat([self.rest[1], y])
        B, t = self.train.batch_size, self.train
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        n_full = len(x) // B * B
        used = 0
        for i in range(0, n_full, B):
            if self.step >= self.total_steps:
                break
            sel = perm[i:i + B]
            xb, yb = x[sel], y[sel] / self.sy
            dead = self.since >= t.dead_after_tokens
            st = transcoder_step(self.tc, xb, dead, t.aux_k, self.n_dead)
            mse = (st.pred - yb).pow(2).sum(-1).mean()
            loss = mse
            aux = torch.zeros(())
            if st.aux_pred is not None:
                e = (yb - st.pred).detach()
                aux = (e - st.aux_pred).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)
                loss = mse + t.aux_coefficient * aux
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            with torch.no_grad():
                self.since += B
                self.since[st.idx[st.vals > 0]] = 0
            self.step += 1
            self.tokens += B
            used += B
            if self.step % 20 == 0 or self.step == self.total_steps:
                if not torch.isfinite(loss):
                    raise NonFiniteError(f"transcoder L{self.tc.cfg.layer}: loss became {loss.item()} at step "
                                         f"{self.step}; lower lr or check the activations")
                self.n_dead = int(dead.sum())
                with torch.no_grad():
                    var = (yb - yb.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
                    self.history.append({"step": self.step, "tokens": self.tokens, "lr": self.sched.get_last_lr()[0],
                                         "mse": mse.item(), "fvu": float(mse / var), "aux": float(aux),
                                         "l0": float((st.vals > 0).float().sum(-1).mean()), "dead": self.n_dead})
        self.rest = (x[perm[n_full:]], y[perm[n_full:]]) if n_full < len(x) else None
        return used

    def finish(self) -> Transcoder:
        with torch.no_grad():
            for p in (self.tc.W_dec, self.tc.b_dec) + ((self.tc.W_skip,) if self.tc.W_skip is not None else ()):
                p.mul_(self.sy)
        return self.tc.eval()


def _window_tokens(session: Session, corpus, starts: Tensor, window: int) -> Tensor:
    """[len(starts) window] token ids of the windows at `starts` (BOS first when the model takes one)."""
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    width = window - int(bos)
    tok = corpus.ids[starts[:, None] + torch.arange(width)[None, :]]
    if bos:
        tok = torch.cat([torch.full((len(starts), 1), session.tokenizer.bos_token_id, dtype=torch.int64), tok], 1)
    return tok.to(session.device)


def _harvest(session: Session, corpus, layers: Sequence[int], starts: Tensor, window: int, rows: int,
             skip_first: bool) -> Iterator[dict[int, tuple[Tensor, Tensor]]]:
    """{layer: (x [n d_model], y [n d_model])} per forward of `rows` windows, float32."""
    sites = [Site(kind, layer) for layer in layers for kind in ("mlp_in", "mlp_out")]
    for i in range(0, len(starts), rows):
        tok = _window_tokens(session, corpus, starts[i:i + rows], window)
        cap = capture_tokens(session, TokenBatch(tok, torch.full((tok.shape[0],), tok.shape[1])), sites)
        out = {}
        for layer in layers:
            x, y = cap[Site("mlp_in", layer)], cap[Site("mlp_out", layer)]
            if skip_first:
                x, y = x[:, 1:], y[:, 1:]
            x, y = x.reshape(-1, x.shape[-1]).float(), y.reshape(-1, y.shape[-1]).float()
            if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
                raise NonFiniteError(f"activations at layer {layer} hold NaN or infinite values")
            out[layer] = (x, y)
        yield out


def train_transcoders(session: Session, corpus, cfgs: Sequence[TranscoderConfig],
                      train: TranscoderTrainConfig | None = None, *, out_dir: str | Path | None = None,
                      progress: bool = True) -> list[TranscoderResult]:
    """Train one transcoder per config (one layer each) from a single activation stream.

    With `out_dir`, each is saved to OUT/layer_LL (transcoder.json + transcoder.safetensors).
    Held-out metrics (`transcoder_metrics`) come with each result when eval_tokens > 0.

    Example:
        >>> c = Corpus.load("../shared/data/corpus/wikitext2_valid.txt", s.tokenizer)
        >>> res = train_transcoders(s, c, [TranscoderConfig(576, 4608, 32, layer=l) for l in (2, 7)])
        >>> res[0].metrics.fvu
    """
    t = train or TranscoderTrainConfig()
    if not cfgs:
        raise SAEConfigError("no transcoder configs given; give one per layer")
    layers = [c.layer for c in cfgs]
    if len(set(layers)) != len(layers):
        raise SAEConfigError(f"layers {layers} repeat; give one config per layer")
    for c in cfgs:
        session.check_layer(c.layer)
        if c.d_model != session.d_model:
            raise TranscoderMismatch(f"d_model={c.d_model} but model {session.name!r} has d_model={session.d_model}")
    cfgs = [TranscoderConfig.from_dict({**c.to_dict(), "model": c.model or session.name,
                                        "skip_first_position": t.skip_first_position}) for c in cfgs]
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    t0 = time.perf_counter()
    per_window = t.window - int(t.skip_first_position)
    starts = window_order(corpus, session, t.window, t.seed)
    n_eval = math.ceil(t.eval_tokens / per_window) if t.eval_tokens else 0
    n_ce = min(n_eval, math.ceil(t.ce_tokens / per_window)) if t.ce_tokens else 0
    distinct = math.ceil(t.total_tokens / t.epochs)
    n_train = math.ceil(distinct / per_window)
    if n_eval >= len(starts):
        raise SAEConfigError(f"corpus {corpus.name!r} has {len(starts)} windows of {t.window} tokens; "
                             f"eval_tokens={t.eval_tokens} holds out {n_eval} of them (lower it)")
    if n_eval + n_train > len(starts):
        log.warning("corpus %r has %d windows; %d held out + %d for training asked for: the training "
                    "windows are repeated", corpus.name, len(starts), n_eval, n_train)
    rows = max(1, t.tokens_per_forward // t.window)
    total_steps = max(1, t.total_tokens // t.batch_size)
    trainers = {c.layer: _Trainer(c, t, total_steps, session.device) for c in cfgs}
    bar = tqdm(total=total_steps * t.batch_size, unit="tok", desc=f"transcoders L{','.join(map(str, layers))}",
               disable=not progress)
    kept: list[dict[int, tuple[Tensor, Tensor]]] = []
    replay = t.epochs > 1 or n_eval + n_train > len(starts)

    def feed(chunk: dict[int, tuple[Tensor, Tensor]]) -> None:
        used = [trainers[layer].feed(chunk[layer][0], chunk[layer][1], gen) for layer in layers]
        bar.update(max(used))
        _postfix(bar, trainers)

    try:
        first = True
        for chunk in _harvest(session, corpus, layers, starts[n_eval:n_eval + n_train], t.window, rows,
                              t.skip_first_position):
            if first:
                for layer, tr in trainers.items():
                    tr.start(*chunk[layer], gen)
                first = False
            if replay:
                kept.append(chunk)
            feed(chunk)
        while kept and min(tr.step for tr in trainers.values()) < total_steps:  # later epochs
            for chunk in kept:
                feed(chunk)
    finally:
        bar.close()
    kept.clear()
    seconds = time.perf_counter() - t0
    tcs = [trainers[c.layer].finish() for c in cfgs]
    metrics: dict[int, TranscoderMetrics] = {}
    if n_eval:
        metrics = {m.layer: m for m in transcoder_metrics(session, corpus, tcs, starts[:n_eval], t.window,
                                                          rows, t.skip_first_position, ce_windows=n_ce)}
    out = []
    for tc in tcs:
        tr, m = trainers[tc.cfg.layer], metrics.get(tc.cfg.layer)
        last = tr.history[-1] if tr.history else {"fvu": math.nan, "l0": math.nan}
        if out_dir is not None:
            save_transcoder(tc, Path(out_dir) / f"layer_{tc.cfg.layer:02d}")
        out.append(TranscoderResult(tc, tr.history, tr.tokens, seconds, m.fvu if m else last["fvu"],
                                    m.l0 if m else last["l0"], m))
    log.info("trained transcoders for layers %s on %d tokens in %.0f s", layers, total_steps * t.batch_size, seconds)
    return out


def _postfix(bar, trainers: dict[int, _Trainer]) -> None:
    fvus = [tr.history[-1]["fvu"] for tr in trainers.values() if tr.history]
    if fvus:
        bar.set_postfix(fvu=" ".join(f"{f:.2f}" for f in fvus))


def train_transcoder(session: Session, corpus, cfg: TranscoderConfig, *, total_tokens: int = 200_000,
                     batch_size: int = 1024, lr: float = 1e-3, window: int = 64, tokens_per_forward: int = 4096,
                     seed: int = 0, epochs: int = 1, eval_tokens: int = 0, out_dir: str | Path | None = None,
                     progress: bool = True) -> TranscoderResult:
    """One transcoder for `cfg.layer` (`train_transcoders` with one config); with `out_dir`
    it is saved there directly (transcoder.json + transcoder.safetensors)."""
    t = TranscoderTrainConfig(total_tokens=total_tokens, epochs=epochs, batch_size=batch_size, lr=lr, window=window,
                              tokens_per_forward=tokens_per_forward, eval_tokens=eval_tokens, ce_tokens=0, seed=seed)
    res = train_transcoders(session, corpus, [cfg], t, progress=progress)[0]
    if out_dir is not None:
        save_transcoder(res.transcoder, out_dir)
    return res


@torch.no_grad()
def transcoder_metrics(session: Session, corpus, transcoders: Sequence[Transcoder], starts: Tensor, window: int = 64,
                       rows: int = 64, skip_first: bool = True, ce_windows: int = 0) -> list[TranscoderMetrics]:
    """FVU, L0 and dead latents of each transcoder on the windows at `starts`; loss recovered on
    the first `ce_windows` of them (see the module docstring)."""
    layers = [tc.cfg.layer for tc in transcoders]
    xs: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    ys: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for chunk in _harvest(session, corpus, layers, starts, window, rows, skip_first):
        for layer in layers:
            xs[layer].append(chunk[layer][0])
            ys[layer].append(chunk[layer][1])
    ce: dict[str, float] = {}
    n_ce = 0
    if ce_windows:
        toks = [_window_tokens(session, corpus, starts[i:min(i + rows, ce_windows)], window)
                for i in range(0, ce_windows, rows)]

        def mean_ce() -> float:
            tot = sum(float(next_token_ce(session.model(tok, return_type="logits"), tok).sum()) for tok in toks)
            return tot / max(1, sum(tok.shape[0] * (tok.shape[1] - 1) for tok in toks))

        n_ce = sum(tok.shape[0] * (tok.shape[1] - 1) for tok in toks)
        ce["clean"] = mean_ce()
        for tc in transcoders:
            for mode in ("replace", "zero"):
                with splice_transcoder(session, tc, mode, skip_first):
                    ce[f"{tc.cfg.layer}:{mode}"] = mean_ce()
    out = []
    for tc in transcoders:
        layer = tc.cfg.layer
        x, y = torch.cat(xs[layer]), torch.cat(ys[layer])
        pred, codes = tc(x.to(tc.W_enc.dtype))
        fvu = float((pred - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12))
        active = codes > 0
        m = TranscoderMetrics(layer, len(x), fvu, float(active.float().sum(-1).mean()), int((~active.any(0)).sum()))
        if ce:
            c, r, z = ce["clean"], ce[f"{layer}:replace"], ce[f"{layer}:zero"]
            m = TranscoderMetrics(layer, len(x), m.fvu, m.l0, m.dead, c, r, z,
                                  (z - r) / (z - c) if z != c else math.nan, n_ce)
        out.append(m)
    return out
