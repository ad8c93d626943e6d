"""SAE quality: sparsity, reconstruction, latent usage, and the downstream cost of splicing.

    L0  = mean_n #{i : f_i(x_n) > 0}
    FVU = sum_n ||x_n - x^_n||^2 / sum_n ||x_n - mean(x)||^2
    dead latents: never active on the sample; dense: active on more than `dense_threshold` of it
    loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)
where CE is the next-token cross-entropy with the site left alone (clean), replaced by the SAE
reconstruction (sae) or set to zero (zero ablation) at the spliced positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .._types import Float, Int, Tensor
from ..errors import ShapeError
from ..session import Session
from .sites import check_sae_site
from .splice import splice_hook

__all__ = ["ReconstructionMetrics", "SpliceMetrics", "reconstruction_metrics", "splice_metrics",
           "next_token_ce"]


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Metrics on a sample of activation vectors (see module doc)."""

    n: int
    l0: float
    fvu: float
    mse: float
    dead: int
    dense: int
    d_sae: int
    frequencies: Tensor  # [d_sae] share of vectors where each latent fires

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("frequencies")
        d["dead_fraction"] = self.dead / self.d_sae
        return d


@dataclass(frozen=True)
class SpliceMetrics:
    """Cross-entropies (nats per token) and the share of loss recovered."""

    ce_clean: float
    ce_sae: float
    ce_zero: float
    loss_recovered: float
    n_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(sae, x: Float[Tensor, "n d_in"], batch_size: int = 4096,
                           dense_threshold: float = 0.1) -> ReconstructionMetrics:
    """L0, FVU, MSE, dead and dense latents of `sae` on vectors `x`."""
    sae.check_input(x, "activation sample")
    if x.dim() != 2 or len(x) < 2:
        raise ShapeError(f"activation sample has shape {tuple(x.shape)}; give [n d_in] with n >= 2")
    x = x.to(sae.W_enc.device, sae.W_enc.dtype)
    err = l0 = 0.0
    counts = torch.zeros(sae.d_sae, device=x.device)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        out = sae(xb, check=False)
        err += (out.recon - xb).pow(2).sum().item()
        active = out.codes > 0
        l0 += active.sum().item()
        counts += active.sum(0)
    var = (x - x.mean(0)).pow(2).sum().item()
    freq = (counts / len(x)).cpu()
    return ReconstructionMetrics(
        n=len(x), l0=l0 / len(x), fvu=err / max(var, 1e-30), mse=err / len(x),
        dead=int((freq == 0).sum()), dense=int((freq > dense_threshold).sum()), d_sae=sae.d_sae,
        frequencies=freq)


def next_token_ce(logits: Float[Tensor, "batch pos d_vocab"],
                  tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    return -lp.gather(-1, tokens[:, 1:, None].to(lp.device))[..., 0]


def _zero_hook(sae):
    start = 1 if sae.cfg.skip_first_position else 0
    head = sae.cfg.head
    per_head = sae.cfg.site.split(":")[0] in ("attn_z", "head_out")

    def zero(act, hook=None):
        out = act.clone()
        if per_head and head is not None:
            out[:, start:, head] = 0
        else:
            out[:, start:] = 0
        return out

    return zero


@torch.no_grad()
def splice_metrics(session: Session, sae, token_batches) -> SpliceMetrics:
    """CE clean / with the SAE spliced in / with the site zeroed, over batches of token ids.

    `token_batches`: an iterable of [batch pos] id tensors (e.g. `WindowBatch.tokens`). All
    positions are scored; positions whose activation is left alone (position 0 when the SAE
    skips it) still count, identically in the three runs.
    """
    site = check_sae_site(session, sae)
    if site.derived:
        raise ShapeError(f"site {site} is derived and cannot be spliced; use attn_z")
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n = 0
    for tokens in token_batches:
        tokens = tokens.to(session.device)
        for name, hooks in (("clean", []), ("sae", [(site.hook_name, splice_hook(sae))]),
                            ("zero", [(site.hook_name, _zero_hook(sae))])):
            with session.hooks(hooks):
                logits = session.model(tokens, return_type="logits")
            sums[name] += next_token_ce(logits, tokens).sum().item()
        n += tokens.shape[0] * (tokens.shape[1] - 1)
    if n == 0:
        raise ShapeError("splice_metrics got no tokens (give batches with at least 2 positions)")
    c, s_, z = (sums[k] / n for k in ("clean", "sae", "zero"))
    rec = (z - s_) / (z - c) if z != c else float("nan")
    return SpliceMetrics(c, s_, z, rec, n)
