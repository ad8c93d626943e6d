"""Triton kernel of the sparse SAE step's optimiser: a weight's gradient summed from its picks and
the Adam update of that weight, row by row, in one pass (the gradient is never written).

For each row j of W [n d] (a decoder row, or an encoder column of the column-major W_enc):

    g_j  = sum over the picks (b, p) with idx[b, p] = j of coef[b, p] * src[b, :]   (+ extra_j)
    g_j -= (g_j . u_j) u_j,  u_j = w_j / |w_j|                    ROWNORM (the decoder constraint)
    m_j  = b1 m_j + (1 - b1) g_j;  v_j = b2 v_j + (1 - b2) g_j^2
    w_j -= lr / bc1 * m_j / (sqrt(v_j) / sqrt(bc2) + eps)          torch.optim.Adam's formula
    w_j /= max(|w_j|, 1e-8)                                        ROWNORM

The unfused form writes the [n d] float32 gradient (`_triton_outer`), reads it in the
decoder's `remove_parallel` (`_triton_rows`) and in torch's fused Adam, and passes over W once
more to renormalise: 52 bytes per weight of the decoder against 24 here (read w, m, v; write w,
m, v), 38 against 26 for the encoder (whose bfloat16 cast per step was 6 of them; the copy written
here is 2), the gathered rows of the picks the same in both. One program per row holds the
row in registers (d <= `pick_adam.MAX_D`), walks its picks one at a time (two on average at 131,072 latents,
k = 64, 4,096 tokens) and sums them in float32 in the picks' sorted order.

`extra`: an optional dense [n d] gradient added to the picks' (AuxK's dense decode over the
candidate columns reaches W_dec through autograd). `low`: a bfloat16 copy of W written in the
same pass (the encoder GEMM's operand under amp: no separate cast of W per step, which read 4
and wrote 2 bytes per weight). Imported only where Triton is wanted.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._types import Float, Int, Tensor
from ._launch import on_device

__all__ = ["pick_adam_rows"]



@triton.jit
def _pick_adam(w_ptr, m_ptr, v_ptr, src_ptr, row_ptr, coef_ptr, start_ptr, extra_ptr, low_ptr,
               lr_bc1, b1, b2, inv_sqrt_bc2, eps, d: tl.constexpr, BLOCK: tl.constexpr,
               HAS_EXTRA: tl.constexpr, ROWNORM: tl.constexpr, HAS_LOW: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < d
    p = tl.load(start_ptr + j)
    p1 = tl.load(start_ptr + j + 1)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    while p < p1:                       # a while loop: Triton 3.6's interpreter takes no tensor range()
        r = tl.load(row_ptr + p).to(tl.int64)
        c = tl.load(coef_ptr + p)
        g += tl.load(src_ptr + r * d + offs, mask=mask, other=0.0).to(tl.float32) * c
        p += 1
    if HAS_EXTRA:
        g += tl.load(extra_ptr + j * d + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + j * d + offs, mask=mask, other=0.0)
    if ROWNORM:
        u = w / tl.maximum(tl.sqrt(tl.sum(w * w, axis=0)), 1e-8)
        g = g - tl.sum(g * u, axis=0) * u
    m = tl.load(m_ptr + j * d + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + j * d + offs, mask=mask, other=0.0)
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    w = w - lr_bc1 * m / (tl.sqrt(v) * inv_sqrt_bc2 + eps)
    if ROWNORM:
        w = w / tl.maximum(tl.sqrt(tl.sum(w * w, axis=0)), 1e-8)
    tl.store(m_ptr + j * d + offs, m, mask=mask)
    tl.store(v_ptr + j * d + offs, v, mask=mask)
    tl.store(w_ptr + j * d + offs, w, mask=mask)
    if HAS_LOW:
        tl.store(low_ptr + j * d + offs, w.to(low_ptr.dtype.element_ty), mask=mask)


def pick_adam_rows(W: Float[Tensor, "n d"], m: Float[Tensor, "n d"], v: Float[Tensor, "n d"],
                   src: Float[Tensor, "batch d"], rows: Int[Tensor, " picks"], coef: Float[Tensor, " picks"],
                   starts: Int[Tensor, " n_plus_1"], extra: Float[Tensor, "n d"] | None, *, lr: float,
                   betas: tuple[float, float], eps: float, step: int, rownorm: bool,
                   low: Float[Tensor, "n d"] | None = None) -> None:
    """One Adam step of W in place (W, m, v float32 contiguous [n d]) on the gradient of the picks
    (`_triton_outer.sort_picks`: picks sorted by row, row j's picks at starts[j]:starts[j+1]) plus
    `extra`; `step` counts from 1 (bias corrections as torch.optim.Adam). `low` (contiguous
    [n d], e.g. bfloat16): receives the new W cast to its dtype, in the same pass."""
    n, d = W.shape
    b1, b2 = betas
    block = triton.next_power_of_2(d)
    if n:
        with on_device(W):
            _pick_adam[(n,)](W, m, v, src, rows, coef, starts, W if extra is None else extra,
                             W if low is None else low,
                             lr / (1 - b1 ** step), b1, b2, 1 / (1 - b2 ** step) ** 0.5, eps, d=d,
                             BLOCK=block, HAS_EXTRA=extra is not None, ROWNORM=rownorm, HAS_LOW=low is not None,
                             # 16 warps: 4.54 ms per launch at 131,072 x 4,096 on an H200 (8: 4.76, 4: 4.77)
                             num_warps=16 if block >= 4096 else 4)
