"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, April 2024 update).

    f = ReLU(pre),    L = ||x - x^||^2 + lambda * sum_i f_i ||d_i||
"""

from __future__ import annotations

import torch

from .._types import Float, Tensor
from .base import SAE, SAEOutput

__all__ = ["ReluSAE"]


class ReluSAE(SAE):
    architecture = "relu"

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        return torch.relu(pre)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        norms = self.W_dec.norm(dim=-1)
        return self.cfg.l1_coefficient * (out.codes * norms).sum(-1).mean()
