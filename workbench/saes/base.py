"""The shared SAE body: a linear encoder, an architecture-specific activation, a linear decoder.

    pre  = (x - b_dec) W_enc + b_enc           x: [... d_in],  pre: [... d_sae]
    f    = sigma(pre)                          sigma: ReLU, TopK or JumpReLU (subclasses)
    x^   = f W_dec + b_dec                     W_dec: [d_sae d_in], row i = decoder direction d_i

Subclasses set `activation` and `sparsity_loss`. Weights are plain float tensors, so a trained
SAE saves to and loads from safetensors exactly (see `workbench.saes.io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._types import Float, Tensor
from ..errors import NonFiniteError, ShapeError
from .config import SAEConfig

__all__ = ["SAE", "SAEOutput"]


@dataclass(frozen=True)
class SAEOutput:
    """One SAE pass: reconstruction, codes and pre-activations ([... d_in] / [... d_sae])."""

    recon: Tensor
    codes: Tensor
    pre: Tensor


class SAE(nn.Module):
    """Base class; build through `make_sae(cfg)` or a subclass."""

    architecture = ""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows; encoder = decoder transpose (a standard start)."""
        with torch.no_grad():
            w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator)
            w /= w.norm(dim=-1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    # -------------------------------------------------------------- shapes
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def check_input(self, x: Tensor, what: str = "SAE input") -> None:
        """One clear error for a wrong width or non-finite values."""
        if x.dim() == 0 or x.shape[-1] != self.d_in:
            raise ShapeError(f"{what} has shape {tuple(x.shape)}; the SAE reads vectors of "
                             f"d_in={self.d_in} in the last dimension")
        if not torch.isfinite(x).all():
            n = int((~torch.isfinite(x)).sum())
            raise NonFiniteError(f"{what} holds {n} NaN or infinite values")

    # -------------------------------------------------------------- passes
    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        x = x.to(self.W_enc.dtype)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        raise NotImplementedError

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Codes f = sigma((x - b_dec) W_enc + b_enc), input validated."""
        self.check_input(x)
        return self.activation(self.pre_acts(x))

    def decode(self, codes: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """x^ = f W_dec + b_dec."""
        if codes.shape[-1] != self.d_sae:
            raise ShapeError(f"codes have shape {tuple(codes.shape)}; the SAE has d_sae={self.d_sae}")
        return codes.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"], check: bool = True) -> SAEOutput:
        if check:
            self.check_input(x)
        pre = self.pre_acts(x)
        codes = self.activation(pre)
        return SAEOutput(self.decode(codes), codes, pre)

    # -------------------------------------------------------------- training
    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        """The architecture's sparsity penalty, averaged over the batch (0 for TopK)."""
        return out.recon.new_zeros(())

    def loss(self, x: Float[Tensor, "batch d_in"], out: SAEOutput) -> dict[str, Tensor]:
        """MSE summed over d_in, averaged over the batch, plus the sparsity penalty."""
        mse = (out.recon - x).pow(2).sum(-1).mean()
        sp = self.sparsity_loss(out)
        return {"loss": mse + sp, "mse": mse, "sparsity": sp}

    def _row_kernels(self, *tensors: Tensor) -> bool:
        """Whether the decoder-row updates take the Triton kernels (`_triton_rows`: CUDA, Triton,
        contiguous rows of at most 16,384)."""
        from .sparse_decode import use_triton_decode

        if not use_triton_decode(self.W_dec):
            return False
        from ._triton_rows import MAX_D

        return self.d_in <= MAX_D and all(t.is_contiguous() and t.shape == self.W_dec.shape for t in tensors)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project decoder rows back onto the unit sphere (the decoder-norm constraint)."""
        if self._row_kernels(self.W_dec):
            from ._triton_rows import normalize_rows

            normalize_rows(self.W_dec)
            return
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each decoder row (keeps ||d_i|| = 1 to first order)."""
        if self.W_dec.grad is None:
            return
        if self._row_kernels(self.W_dec, self.W_dec.grad):
            from ._triton_rows import remove_parallel

            remove_parallel(self.W_dec, self.W_dec.grad)
            return
        w = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def fold_scale(self, scale: float) -> None:
        """Make an SAE trained on s*x read raw x: W_enc *= s, W_dec /= s, b_dec /= s.

        pre(s x) = (s x - b) W + c = (x - b/s)(s W) + c, and x^ = (f W_dec + b)/s; thresholds
        on pre-activations (JumpReLU) are unchanged.
        """
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale={scale!r} must be a positive finite number")
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"{c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}, site={c.site or '-'}"
