"""Triton kernel of a TopK SAE step's weight gradients: the sparse outer product src^T S.

    out[:, j] = sum over the picks (b, p) with idx[b, p] = j of coef[b, p] * src[b, :]

that is out = src^T S for the [R n] sparse matrix S of the picks (at most m per row):

    dW_enc [d n] = (x - b_dec)^T G        src = the centred input, coef = the picked gradients
    dW_dec [n d] = S^T g                  src = the output gradient, coef = the codes (out stored
                                          transposed)

The picks are sorted by column (stable); a program owns BLOCK_L consecutive columns and BLOCK_D
rows of out, walks its columns' picks BLOCK_P at a time and adds src rows times a one-hot [P L]
matrix of their coefficients by `tl.dot`. Every element of out is written once (zero where no
pick lands): no zero-filled [d n] buffer, no scatter, no dense [R n] matrix, no atomics, and the
same sums in the same order on every run. Work is R*m*d*BLOCK_L multiply-adds on the tensor cores
(against R*n*d for the dense GEMM: 2,048x less at 131,072 latents and k = 64); the bytes are one
write of out and R*m gathered rows of src.

`low`: the products in bfloat16 with float32 sums (the dense step's autocast GEMM), else float32
throughout (`input_precision="ieee"`). Imported only where Triton is wanted (CUDA tensors, or
`TRITON_INTERPRET=1` in tests, where the interpreter's bfloat16 `tl.dot` is wrong and its cast to
bfloat16 truncates: `low` is emulated there, operands rounded to bfloat16 as the GPU rounds them,
products and sums in float32, the same values).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._types import Float, Int, Tensor
from ._triton_decode import _on

__all__ = ["sparse_outer"]

BLOCK_P = 32


@triton.jit
def _round_bf16(v):
    """float32 rounded to the nearest bfloat16 (ties to even), kept in float32: the GPU's cast
    (the interpreter's `.to(tl.bfloat16)` truncates)."""
    b = v.to(tl.int32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
    return b.to(tl.float32, bitcast=True)


@triton.jit
def _outer(src_ptr, col_ptr, row_ptr, coef_ptr, start_ptr, out_ptr, n, d, stride_od, stride_oj,
           BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, LOW: tl.constexpr,
           EMULATE: tl.constexpr):
    bl = tl.program_id(0)
    offs_d = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    dmask = offs_d < d
    offs_l = tl.arange(0, BLOCK_L)
    j0 = bl * BLOCK_L
    p0 = tl.load(start_ptr + bl)
    p1 = tl.load(start_ptr + bl + 1)
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for p in range(p0, p1, BLOCK_P):
        offs_p = p + tl.arange(0, BLOCK_P)
        pmask = offs_p < p1
        r = tl.load(row_ptr + offs_p, mask=pmask, other=0).to(tl.int64)
        c = tl.load(coef_ptr + offs_p, mask=pmask, other=0.0)
        lj = tl.load(col_ptr + offs_p, mask=pmask, other=-1) - j0      # masked picks match no column
        x = tl.load(src_ptr + r[:, None] * d + offs_d[None, :], mask=pmask[:, None] & dmask[None, :], other=0.0)
        s = tl.where(lj[:, None] == offs_l[None, :], c[:, None], 0.0)   # [P L] one-hot x coefficient
        if LOW and not EMULATE:
            acc = tl.dot(tl.trans(x.to(tl.bfloat16)), s.to(tl.bfloat16), acc)
        elif LOW:      # Triton's interpreter: bfloat16 operands, products and sums in float32
            acc = tl.dot(tl.trans(_round_bf16(x.to(tl.float32))), _round_bf16(s.to(tl.float32)), acc,
                         input_precision="ieee")
        else:
            acc = tl.dot(tl.trans(x.to(tl.float32)), s.to(tl.float32), acc, input_precision="ieee")
    offs_j = (j0 + offs_l).to(tl.int64)
    tl.store(out_ptr + offs_d[:, None] * stride_od + offs_j[None, :] * stride_oj, acc,
             mask=dmask[:, None] & (offs_j < n)[None, :])


def sparse_outer(src: Float[Tensor, "batch d"], idx: Int[Tensor, "batch m"], coef: Float[Tensor, "batch m"],
                 n: int, transpose: bool = False, low: bool = False) -> Tensor:
    """src^T S: [d n] float32 ([n d] when `transpose`), S[b, idx[b, p]] += coef[b, p].

    Args:
        src: [R d] rows (bfloat16 rows are read as they are; `low` casts float32 ones).
        idx: [R m] columns in [0, n); a column may repeat within a row (its terms add).
        coef: [R m] the picks' coefficients.
        n: the number of columns (latents).
        transpose: return [n d] (a decoder's gradient) instead of [d n] (an encoder's).
        low: bfloat16 products, float32 sums (module docstring).
    """
    if idx.shape != coef.shape or idx.dim() != 2 or src.dim() != 2 or len(src) != len(idx):
        raise ValueError(f"src {tuple(src.shape)}, idx {tuple(idx.shape)} and coef {tuple(coef.shape)} "
                         "must be [R d], [R m], [R m]")
    R, m = idx.shape
    d = src.shape[1]
    block_l = 64 if low else 32
    block_d = 128 if low else 64
    out = torch.empty((n, d) if transpose else (d, n), device=src.device, dtype=torch.float32)
    if not (R and m and d and n):
        return out.zero_()
    cols, order = idx.reshape(-1).sort(stable=True)
    rows = torch.div(order, m, rounding_mode="floor")
    c = coef.reshape(-1)[order].float().contiguous()
    n_blocks = triton.cdiv(n, block_l)
    bounds = torch.arange(0, n_blocks + 1, device=src.device, dtype=cols.dtype) * block_l
    starts = torch.searchsorted(cols, bounds).to(torch.int64)
    stride_od, stride_oj = (1, d) if transpose else (n, 1)
    with _on(src):
        _outer[(n_blocks, triton.cdiv(d, block_d))](
            src.contiguous(), cols.contiguous(), rows.contiguous(), c, starts, out, n, d, stride_od, stride_oj,
            BLOCK_P=BLOCK_P, BLOCK_D=block_d, BLOCK_L=block_l, LOW=low,
            EMULATE=not src.is_cuda)
    return out
