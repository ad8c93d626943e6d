"""Sparse decoding: x^[b] = sum_j v[b, j] W[i[b, j]], reading and training only the picked rows.

A TopK SAE's decoder output is a sum of k decoder rows per token. The dense form (codes [B n]
@ W [n d]) spends three [B n d] matmuls per training step (forward, dW, d codes); this one
spends B*k*d for each:

    CUDA + Triton   `_triton_decode`: a gather-sum forward; a backward kernel for
                    dv[b, j] = g[b] . W[i[b, j]], and dW = sum of v[b, j] g[b] into row
                    i[b, j] by `_triton_outer.sparse_outer` (picks sorted by row, float32)
    otherwise       `torch.nn.functional.embedding_bag` (mode "sum", per-sample weights), whose
                    CPU backward is sparse too (on CUDA it sorts and took 12 ms at 131,072
                    latents on an H200, docs/GPU.md)

Both give the same values and gradients as the dense product
(tests/workbench/saes/test_sparse_decode.py, the Triton kernels in Triton's interpreter on the
CPU and natively on CUDA).
"""

from __future__ import annotations

import functools
import os

import torch

from .._types import Float, Int, Tensor

__all__ = ["sparse_decode", "triton_decode_available", "use_triton_decode"]


@functools.cache
def triton_decode_available() -> bool:
    """Whether Triton imports (it comes with CUDA builds of torch; not with the CPU wheel)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton_decode(W: Tensor) -> bool:
    """The Triton kernels run on CUDA tensors, and on CPU ones under `TRITON_INTERPRET=1`."""
    if not triton_decode_available():
        return False
    return W.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


class _TritonDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, vals, W, sink):  # type: ignore[override]
        from ._triton_decode import decode_forward

        ctx.save_for_backward(idx, vals, W)
        ctx.sink = sink
        return decode_forward(idx, vals, W)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        from ._triton_decode import decode_backward

        idx, vals, W = ctx.saved_tensors
        sink = ctx.sink if ctx.needs_input_grad[2] else None
        dv, dW = decode_backward(idx, vals, W, g, need_dw=ctx.needs_input_grad[2] and sink is None)
        if sink is not None:
            sink.add(g.contiguous(), idx, vals)          # dW as picks, summed by `pick_adam.PickAdam`
        return None, dv if ctx.needs_input_grad[1] else None, dW, None


def sparse_decode(idx: Int[Tensor, "batch m"], vals: Float[Tensor, "batch m"],
                  W: Float[Tensor, "n d"], triton: bool | None = None, sink=None) -> Float[Tensor, "batch d"]:
    """sum_j vals[b, j] W[idx[b, j]] for each row b, differentiable in vals and W.

    Args:
        idx: [B m] row indices into W (int64); a row may repeat within b (its terms add).
        vals: [B m] weights, W's dtype.
        W: [n d] the rows (a decoder).
        triton: force the Triton kernels on or off (None: `use_triton_decode(W)`).
        sink: a `pick_adam.PickSink` (Triton only): W's gradient is left there as picks for
            `pick_adam.PickAdam` instead of being written to W.grad.
    """
    if idx.shape != vals.shape or idx.dim() != 2:
        raise ValueError(f"idx {tuple(idx.shape)} and vals {tuple(vals.shape)} must both be [batch m]")
    if use_triton_decode(W) if triton is None else triton:
        return _TritonDecode.apply(idx, vals, W, sink)
    if sink is not None:
        raise ValueError("a gradient sink needs the Triton decode (CUDA, or TRITON_INTERPRET=1)")
    return torch.nn.functional.embedding_bag(idx, W, per_sample_weights=vals, mode="sum")
