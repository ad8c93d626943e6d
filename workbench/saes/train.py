"""Train an SAE from activations streamed off a corpus (nothing written to disk unless asked).

Per step, on a batch x [B d_in] of (scaled) activations:
    L = ||x - x^||^2 + sparsity(f) + alpha * AuxK,     AuxK = ||e - e^_dead||^2 / ||e||^2
where e = x - x^ and e^_dead is e reconstructed from the top `aux_k` pre-activations among dead
latents (those silent for `dead_after_tokens` tokens). Decoder rows stay unit-norm (the
parallel gradient component is removed, then rows are renormalised). The learning rate warms
up linearly and decays linearly over the last `decay_fraction` of steps. Inputs are scaled by
s = sqrt(d_in / E||x||^2) while training; s is folded into the weights at the end, so the
returned SAE reads raw activations.

On the sparse TopK step with Triton (CUDA) the optimiser is `pick_adam.PickAdam`: W_enc's and
W_dec's gradients are never written, their picks are summed row by row inside the Adam update,
with the decoder's row constraint in the same pass (equal to torch.optim.Adam after
`remove_parallel_grad`, then `normalize_decoder`, to float rounding). `PICK_ADAM = False` takes
the unfused form.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import NonFiniteError
from ..session import Session
from .base import SAE
from .config import SAEConfig, TrainConfig
from .models import make_sae
from .pick_adam import MAX_D, sae_pick_adam
from .sites import check_sae_site
from .sparse_decode import use_triton_decode
from .stream import stream_vectors, window_order
from .topk_sparse import column_major, sparse_aux_loss, sparse_topk_step, use_sparse_step

log = logging.getLogger(__name__)

# the sparse step's W_enc and W_dec gradients summed inside the Adam update (`pick_adam`) where the
# Triton kernels run; False: written out, then torch's fused Adam (benches/sae_step.py --adam)
PICK_ADAM = True

__all__ = ["TrainResult", "train_sae", "aux_loss", "aux_candidates", "dense_step_loss", "compiled_dense_step", "lr_factor"]


@dataclass(frozen=True)
class TrainResult:
    """A trained SAE (raw-activation units) with its history and held-out metrics.

    Args:
        sae: the trained SAE, on the training device, in eval mode.
        history: one dict per logged step (step, tokens, lr, loss, mse, fvu, l0, dead).
        tokens: training vectors consumed; seconds: wall time of the loop (harvest included).
        eval_vectors: held-out activations [n d_in] (never trained on), for metrics.
        scale: the input scale s that was folded into the weights.
    """

    sae: SAE
    history: list[dict]
    tokens: int
    seconds: float
    eval_vectors: torch.Tensor = field(repr=False)
    scale: float = 1.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warm-up to 1 over `warmup` steps, flat, then linear decay over the last fraction."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    decay_start = int(total * (1 - decay_fraction))
    if decay_fraction and step >= decay_start:
        return max(0.0, (total - step) / max(1, total - decay_start))
    return 1.0


def aux_loss(sae: SAE, x, out, dead, aux_k: int, n_dead: int | None = None, cols=None):
    """AuxK: reconstruct the residual e = x - x^ from the top-`aux_k` dead latents' ReLU(pre).

    `n_dead` may be a recent host-side count (avoids a device sync per step); live latents
    are masked to -inf, so a stale count only adds zero codes. `cols` (optional, from
    `aux_candidates`): latent indices holding every dead latent; the pick and the decode then
    run on those columns only ([B n_cols] instead of [B d_sae]), the same loss and gradients.
    """
    n_dead = int(dead.sum()) if n_dead is None else n_dead
    if n_dead == 0 or aux_k == 0 or (cols is not None and len(cols) == 0):
        return x.new_zeros(())
    e = (x - out.recon).detach()
    pre: torch.Tensor = out.pre
    W: torch.Tensor = sae.W_dec
    if cols is not None:
        pre, W, dead = pre[..., cols], W[cols], dead[cols]
    pre = pre.masked_fill(~dead, float("-inf"))
    vals, idx = pre.topk(min(aux_k, n_dead, pre.shape[-1]), dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    e_hat = codes @ W
    return (e - e_hat).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)


def aux_candidates(since_fired, dead_after_tokens: int, tokens_ahead: int):
    """Latents that may count as dead within the next `tokens_ahead` tokens, or None for all.

    A latent's silent-token count grows by at most `tokens_ahead` before the next refresh, so
    every latent dead by then is among these: AuxK can pick and decode on these columns only
    (`aux_loss(cols=...)`). None when they are more than half the dictionary (the gather would
    cost more than it saves). Reads the device once (at the loop's periodic refresh).
    """
    cols = (since_fired >= dead_after_tokens - tokens_ahead).nonzero().squeeze(1)
    return None if 2 * len(cols) > len(since_fired) else cols


def dense_step_loss(sae: SAE, x, dead, aux_k: int, n_dead: int, cols, aux_coefficient: float,
                    amp: bool):
    """The dense step's forward: (loss, mse, aux, fired [d_sae] bool, l0) for batch x.

    One function for the eager and the compiled step (`compiled_dense_step`): the SAE's own
    forward and loss plus AuxK (`aux_loss`); `fired` and `l0` are reduced here so the codes
    never leave a compiled graph.
    """
    with torch.autocast("cuda", torch.bfloat16, enabled=amp):
        out = sae(x, check=False)
        losses = sae.loss(x, out)
        aux = aux_loss(sae, x, out, dead, aux_k, n_dead, cols)
        loss = (losses["loss"] + aux_coefficient * aux).float()
    active = out.codes > 0
    return loss, losses["mse"], aux, active.any(0), active.float().sum(-1).mean()


@functools.cache
def compiled_dense_step():
    """`dense_step_loss` under torch.compile, made once per process (its code is shared by
    every SAE of the same shape; it holds no session or SAE)."""
    return torch.compile(dense_step_loss)


def _batches(source, batch_size: int, buffer_tokens: int, gen: torch.Generator):
    """Mix chunks in a shuffle buffer; yield [batch_size d_in] batches."""
    buf: list[torch.Tensor] = []
    held = 0
    for chunk in source:
        buf.append(chunk)
        held += len(chunk)
        if held >= buffer_tokens:
            data = torch.cat(buf)
            data = data[torch.randperm(len(data), generator=gen).to(data.device)]
            keep = len(data) // 2
            n_out = (len(data) - keep) // batch_size * batch_size
            for i in range(0, n_out, batch_size):
                yield data[i:i + batch_size]
            buf, held = [data[n_out:]], len(data) - n_out
    if buf:
        data = torch.cat(buf)
        data = data[torch.randperm(len(data), generator=gen).to(data.device)]
        for i in range(0, len(data) - batch_size + 1, batch_size):
            yield data[i:i + batch_size]


def train_sae(session: Session, corpus, sae_cfg: SAEConfig, cfg: TrainConfig | None = None,
              out_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train an SAE of `sae_cfg` on activations of `sae_cfg.site` over `corpus`.

    Example:
        >>> c = Corpus.load("../shared/data/corpus", s.tokenizer)
        >>> res = train_sae(s, c, SAEConfig("topk", 576, 9216, site="resid_post:15", k=32),
        ...                 TrainConfig(total_tokens=500_000))
    """
    from .io import save_sae

    cfg = cfg or TrainConfig()
    sae_cfg = SAEConfig.from_dict({**sae_cfg.to_dict(), "model": sae_cfg.model or session.name})
    device = session.device if cfg.device == "auto" else torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    with torch.device(device):      # initialise on the training device: at 131k x 4096 latents the
        sae = make_sae(sae_cfg)      # CPU randn + transpose copy took seconds (CUDA draws differ from CPU's)
    site = check_sae_site(session, sae)
    sae.to(device).train()
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()

    # held-out windows first in the shuffled order; training windows after them
    starts = window_order(corpus, session, cfg.window, cfg.seed)
    per_window = cfg.window - int(sae_cfg.skip_first_position)
    n_eval = math.ceil(cfg.eval_tokens / per_window) if cfg.eval_tokens else 0
    n_train = math.ceil(math.ceil(cfg.total_tokens / cfg.epochs) / per_window)
    if n_eval + n_train > len(starts):
        log.warning("corpus has %d windows; %d asked for (repeats needed)", len(starts), n_eval + n_train)
    eval_starts, train_starts = starts[:n_eval], starts[n_eval:n_eval + n_train]

    def stream(st):
        return stream_vectors(session, corpus, site, sae_cfg.head, st, cfg.window,
                              cfg.tokens_per_forward, sae_cfg.skip_first_position)

    eval_vecs = torch.cat(list(stream(eval_starts))).to(device) if n_eval else None
    train_src = stream(train_starts)
    first = next(train_src).to(device)
    if not torch.isfinite(first).all():
        raise NonFiniteError(f"activations at {site} hold NaN or infinite values")
    scale = math.sqrt(sae_cfg.d_in / first.pow(2).sum(-1).mean().item()) if cfg.normalize else 1.0
    with torch.no_grad():
        sae.b_dec.copy_((first * scale).mean(0))

    kept: list[torch.Tensor] = []

    def source():
        yield first
        kept.append(first)
        for ch in train_src:
            if cfg.epochs > 1:
                kept.append(ch.to(device))
            yield ch.to(device)
        for _ in range(cfg.epochs - 1):
            yield from kept

    total_steps = max(1, cfg.total_tokens // cfg.batch_size)
    use_amp = bool(cfg.amp and device.type == "cuda")
    sparse = use_sparse_step(sae, device, cfg.sparse_step)
    outer = sparse and use_triton_decode(sae.W_enc)     # dW_enc latent by latent: W_enc column-major
    if outer:
        sae.W_enc = column_major(sae.W_enc)
    sinks = w_enc_low = None
    if outer and PICK_ADAM and sae_cfg.d_in <= MAX_D and sae.W_dec.dtype == torch.float32:
        # gradients as picks, summed in the update with the decoder's constraint; under amp the
        # optimiser also keeps W_enc's bfloat16 copy, the encoder GEMM's operand
        opt, sinks, w_enc_low = sae_pick_adam(sae, cfg.lr, low=use_amp)
    else:
        opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999),  # type: ignore[assignment]
                               fused=device.type in ("cuda", "cpu"))  # one kernel for all parameters (CPU: 9x the foreach form)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda st: lr_factor(st, total_steps, cfg.warmup_steps, cfg.decay_fraction))
    compiled = bool(cfg.compile_step) and not sparse
    dense_loss = compiled_dense_step() if compiled else dense_step_loss
    since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=device)
    history: list[dict] = []
    bar = tqdm(total=total_steps * cfg.batch_size, unit="tok", desc=f"SAE {site}", disable=not progress)
    step = tokens = n_dead = 0
    cols = None          # AuxK's candidate columns, refreshed with n_dead (`aux_candidates`)
    # steps between host reads of the dead-latent count: at most half the dead-after window, so
    # AuxK's candidates (`aux_candidates`) are the latents silent for half of it, not all of them
    refresh = max(1, min(20, total_steps // 4, cfg.dead_after_tokens // (2 * cfg.batch_size)))
    try:
        for x in _batches(source(), cfg.batch_size, cfg.buffer_tokens, gen):
            if step >= total_steps:
                break
            x = x * scale
            dead = since_fired >= cfg.dead_after_tokens
            if sparse:
                sp = sparse_topk_step(sae, x, dead, cfg.aux_k, n_dead, amp=use_amp, cols=cols,  # type: ignore[arg-type]
                                      sinks=sinks, w_enc_low=w_enc_low)
                mse = (sp.recon - x).pow(2).sum(-1).mean()
                aux = sparse_aux_loss(x, sp)
                loss = (mse + cfg.aux_coefficient * aux).float()
            else:
                # min(): the picks, not the count, so a compiled step sees one value once many are dead
                loss, mse, aux, fired, l0 = dense_loss(sae, x, dead, cfg.aux_k, min(cfg.aux_k, n_dead), cols,
                                                       cfg.aux_coefficient, use_amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if sinks is None:
                sae.remove_parallel_grad()
            opt.step()
            sched.step()
            if sinks is None:
                sae.normalize_decoder()
            with torch.no_grad():
                if sparse:
                    fired = sp.fired(sae_cfg.d_sae)
                since_fired += len(x)
                since_fired.masked_fill_(fired, 0)           # no host sync (a bool index would sync)
            step += 1
            tokens += len(x)
            bar.update(len(x))
            if step % refresh == 0 or step == total_steps:
                n_dead = int(dead.sum())
                cols = aux_candidates(since_fired, cfg.dead_after_tokens, refresh * cfg.batch_size)
                if not torch.isfinite(loss):
                    raise NonFiniteError(f"training loss became {loss.item()} at step {step}; "
                                         "lower lr or check the activations")
                with torch.no_grad():
                    var = (x - x.mean(0)).pow(2).sum(-1).mean()
                    rec = {"step": step, "tokens": tokens, "lr": sched.get_last_lr()[0],
                           "loss": loss.item(), "mse": mse.item(),
                           "fvu": (mse / var).item(), "aux": float(aux),
                           "l0": (sp.l0() if sparse else l0).item(),
                           "dead": n_dead}
                history.append(rec)
                bar.set_postfix(fvu=f"{rec['fvu']:.3f}", l0=f"{rec['l0']:.1f}", dead=rec["dead"])
            if out_dir and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                ck = make_sae(sae.cfg).to(device)
                ck.load_state_dict(sae.state_dict())
                ck.fold_scale(scale)
                save_sae(ck, Path(out_dir) / "checkpoints" / f"step_{step:07d}")
    finally:
        bar.close()
    if outer:
        sae.W_enc = torch.nn.Parameter(sae.W_enc.detach().contiguous())
    sae.fold_scale(scale)
    sae.eval()
    seconds = time.perf_counter() - t0
    if out_dir:
        save_sae(sae, Path(out_dir) / "final")
    log.info("trained %s on %d tokens in %.0f s", site, tokens, seconds)
    ev = eval_vecs if eval_vecs is not None else first[: cfg.batch_size]
    return TrainResult(sae, history, tokens, seconds, ev, scale)
