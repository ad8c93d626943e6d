"""Sums over a corpus that shard and merge exactly: ROME key second moments, SAE activation stats.

Each function here has a shard form returning sums and counts (float64 sums, integer counts),
run unchanged on a whole corpus (the single-process path) or on a `ShardCorpus` (one Ray
shard); `merge_sums` adds shard results. Definitions:

    key moment (editing.covariance):  S_kk = sum_t k_t k_t^T  [d_mlp d_mlp],  n;  C = S_kk / n
    activation stats (SAE sites):     S_x = sum_t x_t [d_in],  S_xx = sum_t x_t * x_t [d_in],
                                      S_|x|^2 = sum_t ||x_t||^2,  n
        mean = S_x / n,  var = S_xx / n - mean^2,  scale = sqrt(d_in * n / S_|x|^2)
        (the input scale `train_sae` folds in), and with an SAE, per latent:
        fires_i = #{t : f_i(x_t) > 0} (frequency fires_i / n), S_f = sum_t f(x_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._types import Float, Tensor
from ..capture import capture_tokens
from ..errors import CorpusError
from ..hooks import Site, parse_site
from ..session import Session, TokenBatch

__all__ = ["key_moment_sums", "activation_sums", "ActivationStats",
           "activation_stats_from_sums"]


@torch.no_grad()
def key_moment_sums(session: Session, corpus, layer: int, n_tokens: int = 100_000, window: int = 128,
                    tokens_per_batch: int = 8192, progress: bool = False) -> dict:
    """``{"sum_kk": [d_mlp d_mlp] float64, "n": int}`` over the corpus's first `n_tokens`.

    The same tokens, batches and keys as `editing.covariance.key_stats` (``mlp_post`` of
    `layer`, the BOS column left out), before its division by n.
    """
    layer = session.check_layer(layer)
    site = Site("mlp_post", layer)
    acc = torch.zeros(session.d_mlp, session.d_mlp, dtype=torch.float64, device=session.device)
    n = 0
    for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                             max_tokens=n_tokens, progress=progress, desc=f"key sums L{layer}"):
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
        k = capture_tokens(session, TokenBatch(wb.tokens, lengths), [site])[site]
        k = k[:, int(wb.bos):].reshape(-1, session.d_mlp).double()
        acc += k.T @ k
        n += k.shape[0]
    return {"sum_kk": acc.cpu(), "n": n}


@torch.no_grad()
def activation_sums(session: Session, corpus, site: str | Site, head: int | None = None,
                    skip_first: bool = False, window: int = 128, tokens_per_batch: int = 8192,
                    max_tokens: int | None = None, sae=None) -> dict:
    """Sums of an SAE site's vectors (and of an SAE's codes) over the corpus's windows, in order.

    Vectors come from `workbench.saes.stream.stream_vectors` (the SAE trainer's stream), over
    the windows ``corpus.window_starts`` gives (a shard's windows on a `ShardCorpus`).
    """
    from ..saes.stream import stream_vectors

    site = parse_site(site)
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    max_windows = None if max_tokens is None else max(1, max_tokens // window)
    starts = corpus.window_starts(window, bos, max_windows)
    out: dict = {"n": 0}
    if sae is not None:
        sae = sae.to(session.device).eval()
    for x in stream_vectors(session, corpus, site, head, starts, window, tokens_per_batch,
                            skip_first):
        xd = x.double()
        if "sum" not in out:
            d = x.shape[-1]
            out.update(sum=torch.zeros(d, dtype=torch.float64, device=x.device),
                       sum_sq=torch.zeros(d, dtype=torch.float64, device=x.device),
                       sum_norm_sq=torch.zeros((), dtype=torch.float64, device=x.device))
            if sae is not None:
                out.update(fires=torch.zeros(sae.d_sae, dtype=torch.int64, device=x.device),
                           code_sum=torch.zeros(sae.d_sae, dtype=torch.float64, device=x.device))
        out["sum"] += xd.sum(0)
        out["sum_sq"] += (xd * xd).sum(0)
        out["sum_norm_sq"] += (xd * xd).sum()
        out["n"] += x.shape[0]
        if sae is not None:
            codes = sae.encode(x.to(sae.W_enc.dtype))
            out["fires"] += (codes > 0).sum(0)
            out["code_sum"] += codes.double().sum(0)
    if out["n"] == 0:
        raise CorpusError(f"corpus {corpus.name!r} gave no activation vectors")
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


@dataclass(frozen=True)
class ActivationStats:
    """Per-dimension statistics of a site's vectors (and an SAE's latent usage), from sums."""

    n: int
    mean: Float[Tensor, " d_in"]
    var: Float[Tensor, " d_in"]
    mean_norm_sq: float
    scale: float
    frequencies: Float[Tensor, " d_sae"] | None = None
    mean_code: Float[Tensor, " d_sae"] | None = None

    @property
    def dead(self) -> int | None:
        return None if self.frequencies is None else int((self.frequencies == 0).sum())


def activation_stats_from_sums(s: dict) -> ActivationStats:
    n = int(s["n"])
    mean = s["sum"] / n
    ms = float(s["sum_norm_sq"]) / n
    freq = s["fires"].double() / n if "fires" in s else None
    code = s["code_sum"] / n if "code_sum" in s else None
    return ActivationStats(n, mean, s["sum_sq"] / n - mean * mean, ms,
                           math.sqrt(len(mean) / ms) if ms > 0 else float("nan"), freq, code)
