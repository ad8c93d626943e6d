"""Where the SAE's Triton kernels launch: Triton launches on the current CUDA device."""

from __future__ import annotations

import contextlib

import torch

from .._types import Tensor

__all__ = ["on_device"]


def on_device(t: Tensor):
    """Launch on t's GPU (Triton launches on the current device), or as is (interpreter, CPU)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
