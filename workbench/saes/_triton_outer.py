"""Triton kernel of a TopK SAE step's weight gradients: the sparse outer product S^T src.

    out[j, :] = sum over the picks (b, p) with idx[b, p] = j of coef[b, p] * src[b, :]

that is out = S^T src for the [R n] sparse matrix S of the picks (at most m per row):

    dW_dec [n d] = S^T g                  src = the output gradient, coef = the codes
    dW_enc^T [n d] = G^T (x - b_dec)      src = the centred input, coef = the picked gradients
                                          (training keeps W_enc [d n] in column-major storage,
                                          so dW_enc is this result's transposed view, no copy)

The picks are sorted by column (stable, `torch.sort`) and each program owns one row j of out
and BLOCK_D of its columns: it walks j's picks (two on average at 131,072 latents, k = 64,
4,096 tokens) BLOCK_P at a time, gathers their src rows and sums them weighted, in float32, then
writes its block once (zeros where no pick lands). No zero-filled buffer, no scatter into a dense
[R n] matrix, no atomics, and the same sums in the same order on every run. The bytes: one write
of out and R*m gathered rows of src; no GEMM of the dense step's R*n*d.

`low`: src read in bfloat16 (the dense step's autocast rounds it so; sums stay float32).
Imported only where Triton is wanted (CUDA tensors, or `TRITON_INTERPRET=1` in tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._types import Float, Int, Tensor
from ._launch import on_device

__all__ = ["sparse_outer", "sort_picks"]

BLOCK_P = 8
BLOCK_D = 1024


@triton.jit
def _rows(src_ptr, row_ptr, coef_ptr, start_ptr, out_ptr, d, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    offs_d = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    dmask = offs_d < d
    p = tl.load(start_ptr + j)
    p1 = tl.load(start_ptr + j + 1)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    while p < p1:                       # a while loop: Triton 3.6's interpreter takes no tensor range()
        offs_p = p + tl.arange(0, BLOCK_P)
        pmask = offs_p < p1
        r = tl.load(row_ptr + offs_p, mask=pmask, other=0).to(tl.int64)
        c = tl.load(coef_ptr + offs_p, mask=pmask, other=0.0)
        x = tl.load(src_ptr + r[:, None] * d + offs_d[None, :], mask=pmask[:, None] & dmask[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32) * c[:, None], axis=0)
        p += BLOCK_P
    tl.store(out_ptr + j * d + offs_d, acc, mask=dmask)


def sort_picks(cols: Int[Tensor, " picks"], rows: Int[Tensor, " picks"], coef: Float[Tensor, " picks"],
               n: int) -> tuple[Int[Tensor, " picks"], Float[Tensor, " picks"], Int[Tensor, " n_plus_1"]]:
    """Picks (column, row, coefficient) sorted by column, stably: (their rows, their coefficients
    in float32, and starts [n + 1], column j's picks at starts[j]:starts[j + 1])."""
    cols, order = cols.sort(stable=True)
    starts = torch.searchsorted(cols, torch.arange(n + 1, device=cols.device, dtype=cols.dtype))
    return rows[order].contiguous(), coef[order].float().contiguous(), starts


def sparse_outer(src: Float[Tensor, "batch d"], idx: Int[Tensor, "batch m"], coef: Float[Tensor, "batch m"],
                 n: int, low: bool = False) -> Float[Tensor, "n d"]:
    """S^T src [n d] in float32, where S[b, idx[b, p]] += coef[b, p].

    Args:
        src: [R d] rows.
        idx: [R m] columns in [0, n); a column may repeat within a row (its terms add).
        coef: [R m] the picks' coefficients (summed in float32).
        n: the number of columns (latents).
        low: read src in bfloat16 (rounded as the GPU casts), as the dense step's autocast.
    """
    if idx.shape != coef.shape or idx.dim() != 2 or src.dim() != 2 or len(src) != len(idx):
        raise ValueError(f"src {tuple(src.shape)}, idx {tuple(idx.shape)} and coef {tuple(coef.shape)} "
                         "must be [R d], [R m], [R m]")
    R, m = idx.shape
    d = src.shape[1]
    out = torch.empty(n, d, device=src.device, dtype=torch.float32)
    if R and m and d and n:
        rows = torch.arange(R, device=idx.device).repeat_interleave(m)
        rows, c, starts = sort_picks(idx.reshape(-1), rows, coef.reshape(-1), n)
        src = src.to(torch.bfloat16 if low else torch.float32).contiguous()
        with on_device(src):
            _rows[(n, triton.cdiv(d, BLOCK_D))](src, rows, c, starts, out, d, BLOCK_P=BLOCK_P, BLOCK_D=BLOCK_D)
    else:
        out.zero_()
    return out
