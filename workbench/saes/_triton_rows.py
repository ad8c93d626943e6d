"""Triton kernels for the decoder's row constraint in training, one pass over the rows each.

    remove_parallel   g_i -= (g_i . u_i) u_i,   u_i = w_i / max(|w_i|, 1e-8)   (reads W and G, writes G)
    normalize_rows    w_i /= max(|w_i|, 1e-8)                                 (reads and writes W)

Torch's form makes a normalised copy of W and a product temporary (about 7 and 3 passes over a
[d_sae d_in] float32 matrix, 1 GiB each at 65,536 x 4096). Imported only where Triton is wanted
(`sparse_decode.use_triton_decode`); one program per row, the row held in registers (d <= 16,384).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._types import Float, Tensor
from ._launch import on_device

__all__ = ["remove_parallel", "normalize_rows", "MAX_D"]

MAX_D = 16384


@triton.jit
def _remove_parallel(w_ptr, g_ptr, d: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < d
    w = tl.load(w_ptr + r * d + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + r * d + offs, mask=mask, other=0.0).to(tl.float32)
    u = w / tl.maximum(tl.sqrt(tl.sum(w * w, axis=0)), 1e-8)
    g = g - tl.sum(g * u, axis=0) * u
    tl.store(g_ptr + r * d + offs, g.to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normalize(w_ptr, d: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < d
    w = tl.load(w_ptr + r * d + offs, mask=mask, other=0.0).to(tl.float32)
    w = w / tl.maximum(tl.sqrt(tl.sum(w * w, axis=0)), 1e-8)
    tl.store(w_ptr + r * d + offs, w.to(w_ptr.dtype.element_ty), mask=mask)


def _launch_args(W: Tensor) -> tuple[int, int, int]:
    n, d = W.shape
    block = triton.next_power_of_2(d)
    return n, d, block


def remove_parallel(W: Float[Tensor, "n d"], G: Float[Tensor, "n d"]) -> None:
    """In place on G (both contiguous, same shape, d <= MAX_D)."""
    n, d, block = _launch_args(W)
    if n:
        with on_device(W):
            _remove_parallel[(n,)](W, G, d=d, BLOCK=block, num_warps=8 if block >= 4096 else 4)


def normalize_rows(W: Float[Tensor, "n d"]) -> None:
    """In place on W (contiguous, d <= MAX_D)."""
    n, d, block = _launch_args(W)
    if n:
        with on_device(W):
            _normalize[(n,)](W, d=d, BLOCK=block, num_warps=8 if block >= 4096 else 4)
