"""JumpReLU SAE (Rajamanoharan et al. 2024): f_i = pre_i * H(pre_i - theta_i), theta_i > 0.

    L = ||x - x^||^2 + lambda * sum_i H(pre_i - theta_i)        (an L0 penalty)

The step H has no useful gradient; training uses straight-through pseudo-derivatives with a
rectangle kernel K of bandwidth eps:
    d/dtheta JumpReLU = -(theta/eps) K((pre - theta)/eps),   d/dtheta H = -(1/eps) K((pre - theta)/eps).
theta is stored as log_threshold so that it stays positive.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._types import Float, Tensor
from .base import SAE, SAEOutput

__all__ = ["JumpReluSAE"]


def _rect(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = grad * (pre > theta).to(pre.dtype)
        g_theta = -(theta / eps) * _rect((pre - theta) / eps) * grad
        return g_pre, g_theta.reshape(-1, theta.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = -(1.0 / eps) * _rect((pre - theta) / eps) * grad
        return torch.zeros_like(pre), g_theta.reshape(-1, theta.shape[-1]).sum(0), None


class JumpReluSAE(SAE):
    architecture = "jumprelu"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold)))

    @property
    def threshold(self) -> Float[Tensor, " d_sae"]:
        return self.log_threshold.exp()

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        if torch.is_grad_enabled() and self.training:
            return _JumpReLU.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return pre * (pre > self.threshold).to(pre.dtype)

    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        l0 = _Step.apply(out.pre, self.threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return self.cfg.l0_coefficient * l0
