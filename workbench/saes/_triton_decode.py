"""Triton kernels of `sparse_decode`: out[b] = sum_j v[b, j] W[i[b, j]] and its gradients.

Imported only where Triton is wanted (CUDA tensors, or `TRITON_INTERPRET=1` in tests): `import
workbench` never imports Triton.

    forward   out [R d]   program (row b, block of d): picks in blocks of BLOCK_J, rows of W
                          gathered as a [BLOCK_J BLOCK_D] tile, summed over the picks
    backward  dv  [R m]   dv[b, j] = g[b] . W[i[b, j]]         program (row b, block of picks),
                                                               looping over d
              dW  [n d]   dW[i[b, j]] += v[b, j] g[b]          `_triton_outer.sparse_outer` (picks
                                                               sorted by row of W, float32, each
                                                               row written once, no atomics)

Work is B*m*d for each (against B*n*d for the dense decoder's three matmuls); dW's sums run in
the same order every run (session 17's float32 atomic adds did not). m and d are compile-time
constants (one compile per SAE's k and d_in).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._types import Float, Int, Tensor
from ._launch import on_device

__all__ = ["decode_forward", "decode_backward"]

BLOCK_J = 16
BLOCK_D = 128


@triton.jit
def _fwd(idx_ptr, val_ptr, w_ptr, out_ptr, m: tl.constexpr, d: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < d
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j0 in range(0, m, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        jmask = offs_j < m
        i = tl.load(idx_ptr + r * m + offs_j, mask=jmask, other=0).to(tl.int64)
        v = tl.load(val_ptr + r * m + offs_j, mask=jmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + i[:, None] * d + offs_d[None, :], mask=jmask[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * v[:, None], axis=0)
    tl.store(out_ptr + r * d + offs_d, acc, mask=dmask)


@triton.jit
def _bwd(idx_ptr, w_ptr, g_ptr, dv_ptr, m: tl.constexpr, d: tl.constexpr, BLOCK_J: tl.constexpr,
         BLOCK_D: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    offs_j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    jmask = offs_j < m
    i = tl.load(idx_ptr + r * m + offs_j, mask=jmask, other=0).to(tl.int64)
    dot = tl.zeros([BLOCK_J], dtype=tl.float32)
    for d0 in range(0, d, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < d
        mask2 = jmask[:, None] & dmask[None, :]
        g = tl.load(g_ptr + r * d + offs_d, mask=dmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + i[:, None] * d + offs_d[None, :], mask=mask2, other=0.0).to(tl.float32)
        dot += tl.sum(w * g[None, :], axis=1)
    tl.store(dv_ptr + r * m + offs_j, dot, mask=jmask)


def decode_forward(idx: Int[Tensor, "batch m"], vals: Float[Tensor, "batch m"],
                   W: Float[Tensor, "n d"]) -> Float[Tensor, "batch d"]:
    """out[b] = sum_j vals[b, j] W[idx[b, j]], accumulated in float32, returned in W's dtype."""
    idx, vals, W = idx.contiguous(), vals.contiguous(), W.contiguous()
    R, m = idx.shape
    d = W.shape[1]
    out = torch.empty(R, d, device=W.device, dtype=torch.float32)
    if R and m:
        with on_device(W):
            _fwd[(R, triton.cdiv(d, BLOCK_D))](idx, vals, W, out, m, d, BLOCK_J=BLOCK_J, BLOCK_D=BLOCK_D)
    else:
        out.zero_()
    return out.to(W.dtype)


def decode_backward(idx: Int[Tensor, "batch m"], vals: Float[Tensor, "batch m"], W: Float[Tensor, "n d"],
                    g: Float[Tensor, "batch d"], need_dw: bool = True
                    ) -> tuple[Float[Tensor, "batch m"], Float[Tensor, "n d"] | None]:
    """(d vals [R m] in vals' dtype, dW [n d] in W's dtype or None) for the output gradient g."""
    idx, vals, W, g = idx.contiguous(), vals.contiguous(), W.contiguous(), g.contiguous()
    R, m = idx.shape
    d = W.shape[1]
    dv = torch.zeros(R, m, device=W.device, dtype=torch.float32)
    if R and m:
        with on_device(W):
            _bwd[(R, triton.cdiv(m, BLOCK_J))](idx, W, g, dv, m, d, BLOCK_J=BLOCK_J, BLOCK_D=BLOCK_D)
    if not need_dw:
        return dv.to(vals.dtype), None
    from ._triton_outer import sparse_outer

    dW = sparse_outer(g, idx, vals, W.shape[0])                                     # [n d] float32
    return dv.to(vals.dtype), dW.to(W.dtype)
