"""Adam for the sparse SAE step, whose encoder and decoder gradients arrive as picks.

The sparse step's weight gradients are sums over the picks, S^T src (`_triton_outer`). Written
out they cost a [d_sae d_in] float32 matrix each per step, read again by the decoder's
constraint and by Adam. Here the backward passes leave their picks in a `PickSink` instead of a
gradient, and `PickAdam.step` sums them row by row inside the Adam update
(`_triton_adam.pick_adam_rows`), with the decoder's row constraint (gradient parallel to the
row removed, row renormalised) in the same pass. The result is the unfused step's
(torch.optim.Adam after `SAE.remove_parallel_grad`, then `SAE.normalize_decoder`) to float
rounding (tests/workbench/saes/test_pick_adam.py); it needs Triton (CUDA, or its interpreter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .._types import Float, Int, Tensor

__all__ = ["PickSink", "Picked", "PickAdam", "sae_pick_adam", "MAX_D"]

MAX_D = 8192        # the kernel holds a row in registers


@dataclass
class PickSink:
    """A weight's gradient left as picks: sum over the parts of S^T src, where the part's
    S[b, idx[b, p]] += coef[b, p] (rows of the weight's row view: decoder rows, encoder columns).

    The sparse step's backward passes `add` to it; `PickAdam.step` takes and clears it.
    """

    n: int
    parts: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)

    def add(self, src: Float[Tensor, "batch d"], idx: Int[Tensor, "batch m"], coef: Float[Tensor, "batch m"]) -> None:
        if idx.shape != coef.shape or idx.dim() != 2 or src.dim() != 2 or len(src) != len(idx):
            raise ValueError(f"src {tuple(src.shape)}, idx {tuple(idx.shape)} and coef {tuple(coef.shape)} "
                             "must be [R d], [R m], [R m]")
        self.parts.append((src, idx, coef))

    def take(self):
        """(src [R d], rows [P], coef [P], starts [n + 1]) of every part so far, sorted by weight
        row (`_triton_outer.sort_picks`), or None when empty; the sink is empty afterwards."""
        from ._triton_outer import sort_picks

        parts, self.parts = self.parts, []
        if not parts:
            return None
        dt = torch.float32 if any(s.dtype == torch.float32 for s, _, _ in parts) else parts[0][0].dtype
        cols, rows, coefs, srcs = [], [], [], []
        offset = 0
        for src, idx, coef in parts:
            R, m = idx.shape
            cols.append(idx.reshape(-1))
            rows.append(torch.arange(offset, offset + R, device=idx.device).repeat_interleave(m))
            coefs.append(coef.reshape(-1))
            srcs.append(src.to(dt))
            offset += R
        src = (srcs[0] if len(srcs) == 1 else torch.cat(srcs)).contiguous()
        return (src, *sort_picks(torch.cat(cols), torch.cat(rows), torch.cat(coefs), self.n))


@dataclass(frozen=True)
class Picked:
    """How `PickAdam` steps one weight: its sink, whether the parameter is stored transposed
    (W_enc [d_in d_sae] column-major: its rows view is W.t()), and whether its rows are
    unit-norm (the decoder: gradient parallel to the row removed, row renormalised). `low`: a
    contiguous copy of the rows view in a lower dtype (bfloat16), rewritten by every step."""

    sink: PickSink
    transposed: bool = False
    rownorm: bool = False
    low: Tensor | None = None


class PickAdam(torch.optim.Optimizer):
    """torch.optim.Adam (no weight decay, no amsgrad) where some parameters' gradients are picks.

    Args:
        params: every parameter to optimise.
        picked: the parameters whose gradients arrive in a `PickSink` (their rows view float32
            and contiguous); a `.grad` they also get (e.g. AuxK's dense decode) is added.
        lr, betas, eps: as torch.optim.Adam.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], picked: Mapping[torch.nn.Parameter, Picked],
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.picked = dict(picked)
        # the other parameters: torch.optim.Adam itself, one per group, its lr set from the group per step
        self.plain = [(g, torch.optim.Adam(ps, lr=g["lr"], betas=g["betas"], eps=g["eps"]))
                      for g in self.param_groups if (ps := [p for p in g["params"] if p not in self.picked])]
        for p, how in self.picked.items():
            rows = p.detach().t() if how.transposed else p.detach()
            if (rows.dtype != torch.float32 or not rows.is_contiguous() or rows.dim() != 2
                    or len(rows) != how.sink.n or rows.shape[1] > MAX_D):
                raise ValueError(f"a picked parameter's rows view must be a contiguous float32 [{how.sink.n} d] "
                                 f"matrix, d <= {MAX_D}; got {rows.dtype} {tuple(rows.shape)} strides {rows.stride()}")
            if how.low is not None and (how.low.shape != rows.shape or not how.low.is_contiguous()):
                raise ValueError(f"the low copy {tuple(how.low.shape)} must be contiguous and of the rows "
                                 f"view's shape {tuple(rows.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if closure is not None:
            raise ValueError("PickAdam takes no closure")
        from ._triton_adam import pick_adam_rows

        for group, adam in self.plain:
            adam.param_groups[0]["lr"] = group["lr"]
            adam.step()
        for group in self.param_groups:
            lr, betas, eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                how = self.picked.get(p)
                if how is None:
                    continue
                taken = how.sink.take()
                if taken is None and p.grad is None:
                    continue
                rows = p.detach().t() if how.transposed else p.detach()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(rows, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(rows, memory_format=torch.contiguous_format)
                state["step"] += 1
                extra = None
                if p.grad is not None:
                    extra = (p.grad.t() if how.transposed else p.grad).float().contiguous()
                if taken is None:       # no picks, only .grad: an empty pick list (src unread)
                    empty = torch.zeros(how.sink.n + 1, dtype=torch.long, device=p.device)
                    taken = (rows, empty[:0], rows.new_zeros(0), empty)
                pick_adam_rows(rows, state["exp_avg"], state["exp_avg_sq"], *taken, extra, lr=lr, betas=betas,
                               eps=eps, step=state["step"], rownorm=how.rownorm, low=how.low)


def sae_pick_adam(sae, lr: float, betas: tuple[float, float] = (0.9, 0.999), low: bool = False
                  ) -> tuple[PickAdam, tuple[PickSink, PickSink], Tensor | None]:
    """`PickAdam` for a TopK SAE on the sparse step, as `train_sae` makes it: (the optimiser, the
    (W_enc, W_dec) sinks for `topk_sparse.sparse_topk_step(sinks=...)`, and with `low` the
    bfloat16 copy of W_enc [d_in d_sae] it keeps for `sparse_topk_step(w_enc_low=...)`, else None).
    W_enc must be column-major (`topk_sparse.column_major`); W_dec's rows are kept unit-norm."""
    n = sae.cfg.d_sae
    sinks = (PickSink(n), PickSink(n))
    w_low = sae.W_enc.detach().t().to(torch.bfloat16) if low else None          # [d_sae d_in], contiguous
    opt = PickAdam(sae.parameters(), {sae.W_enc: Picked(sinks[0], transposed=True, low=w_low),
                                      sae.W_dec: Picked(sinks[1], rownorm=True)}, lr=lr, betas=betas)
    return opt, sinks, None if w_low is None else w_low.t()
