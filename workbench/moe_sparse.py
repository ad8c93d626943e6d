"""A sparse expert forward for a MoEfied FFN, and its timing against the dense FFN.

For tokens x [n d_model] and each token's chosen experts, only the chosen experts' units are
computed: for every expert e, the tokens routed to it are gathered and

    y[t] += W_down[:, E_e] (act(W_gate[E_e] x_t) * (W_up[E_e] x_t))      (gated MLP)

so the cost is about k/E of the dense FFN plus the gather/scatter. Its output equals the
dense FFN with the coefficients of unchosen units set to zero (what `top_k_experts` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._types import Float, Int, Tensor
from .errors import ShapeError, WorkbenchError
from .moe import Experts
from .moe_quality import check_k
from .moe_routing import Router, expert_table
from .session import Session

__all__ = ["ExpertFFN", "expert_ffn", "SparseTiming", "time_sparse_ffn"]


@dataclass(frozen=True)
class ExpertFFN:
    """One layer's gated FFN weights regrouped by expert (contiguous rows per expert).

    Args:
        layer, n_experts: the layer and E. act: the activation function.
        gate, up: [E s d_model] rows of W_gate / W_up per expert (s = largest expert, zero-padded).
        down: [E s d_model] rows of W_down.T per expert. units: [E s] unit ids (-1 = padding).
    """

    layer: int
    n_experts: int
    act: Callable[[Tensor], Tensor]
    gate: Float[Tensor, "E s d_model"]
    up: Float[Tensor, "E s d_model"]
    down: Float[Tensor, "E s d_model"]
    units: Int[Tensor, "E s"]

    def dense(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
        """The full FFN through the regrouped weights (all experts)."""
        h = self.act(torch.einsum("nd,esd->nes", x, self.gate)) * torch.einsum("nd,esd->nes", x, self.up)
        return torch.einsum("nes,esd->nd", h, self.down)

    def sparse(self, x: Float[Tensor, "n d_model"], chosen: Int[Tensor, "n k"],
               grouped: bool = False) -> Float[Tensor, "n d_model"]:
        """Only the chosen experts of each token: gather tokens per expert, compute, scatter-add.

        grouped: all experts at once, each expert's tokens padded to the busiest expert's count
        C ([E C d_model] gathers and three batched matmuls: a fixed handful of kernels whatever
        E is), against the default per-expert loop (one gather, two matmuls and a scatter-add
        per expert, whose kernel launches made it slower than the dense FFN on a GPU in session
        12). Same values. On 2 CPU cores the grouped pass was slower (padding to the busiest
        expert, the [E C d_model] gather: 196-910 ms against 40-197 ms for 1,024 tokens);
        benches/moe.py times both, so a GPU session can decide."""
        if chosen.dim() != 2 or chosen.shape[0] != x.shape[0]:
            raise ShapeError(f"chosen {tuple(chosen.shape)} must be [n k] with n={x.shape[0]}")
        if len(chosen) and (int(chosen.min()) < 0 or int(chosen.max()) >= self.n_experts):
            raise ShapeError(f"chosen experts must be in 0..{self.n_experts - 1}")
        srt = chosen.sort(-1).values
        if chosen.shape[1] > 1 and bool((srt[:, 1:] == srt[:, :-1]).any()):
            raise ShapeError("a token lists the same expert twice in `chosen`; give distinct experts")
        y = torch.zeros_like(x)
        flat_e = chosen.reshape(-1)
        flat_t = torch.arange(x.shape[0], device=x.device).repeat_interleave(chosen.shape[1])
        order = flat_e.argsort(stable=True)
        if grouped:
            return self._grouped(x, flat_e[order], flat_t[order], y)
        counts = torch.bincount(flat_e, minlength=self.n_experts).tolist()
        tok = flat_t[order]
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            t = tok[start : start + c]
            start += c
            xe = x[t]
            h = self.act(xe @ self.gate[e].T) * (xe @ self.up[e].T)
            y.index_add_(0, t, h @ self.down[e])
        return y

    def _grouped(self, x: Tensor, e_sorted: Tensor, t_sorted: Tensor, y: Tensor) -> Tensor:
        """`sparse` with every expert in one batched pass (tokens grouped by expert, padded)."""
        E = self.n_experts
        counts = torch.bincount(e_sorted, minlength=E)
        if len(e_sorted) == 0:
            return y
        C = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(e_sorted), device=x.device) - starts[e_sorted]     # place within its expert
        idx = torch.zeros(E, C, dtype=torch.long, device=x.device)
        live = torch.zeros(E, C, dtype=torch.bool, device=x.device)
        idx[e_sorted, slot] = t_sorted
        live[e_sorted, slot] = True
        xe = x[idx]                                                                # [E C d]
        h = self.act(torch.bmm(xe, self.gate.transpose(1, 2))) * torch.bmm(xe, self.up.transpose(1, 2))
        out = torch.bmm(h, self.down) * live[..., None].to(x.dtype)                # [E C d]
        return y.index_add_(0, idx.reshape(-1), out.reshape(-1, x.shape[-1]))


def expert_ffn(session: Session, experts: Experts) -> ExpertFFN:
    """Regroup `experts.layer`'s gated FFN weights by expert."""
    mlp = session.hf_model.model.layers[session.check_layer(experts.layer)].mlp
    if not hasattr(mlp, "gate_proj"):
        raise WorkbenchError(f"layer {experts.layer}'s MLP is not gated; the sparse forward is for gated MLPs")
    E = experts.n_experts
    units = expert_table(experts)
    safe = units.clamp_min(0).to(mlp.gate_proj.weight.device)
    pad = (units >= 0).to(safe.device).unsqueeze(-1)

    def rows(w):
        return torch.where(pad, w.detach()[safe], torch.zeros((), dtype=w.dtype, device=w.device))

    return ExpertFFN(experts.layer, E, mlp.act_fn, rows(mlp.gate_proj.weight), rows(mlp.up_proj.weight),
                     rows(mlp.down_proj.weight.T), units)


@dataclass(frozen=True)
class SparseTiming:
    """Milliseconds per call of the dense FFN and the sparse expert forward (median of repeats):
    `sparse_ms` the per-expert loop (the default), `grouped_ms` the grouped pass."""

    layer: int
    n_tokens: int
    k: int
    n_experts: int
    dense_ms: float
    sparse_ms: float
    device: str
    dtype: str
    max_abs_diff: float
    grouped_ms: float = float("nan")

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms

    def to_dict(self) -> dict:
        return {**self.__dict__, "speedup": self.speedup}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_sparse_ffn(session: Session, router: Router, k: int | float, n_tokens: int = 4096, repeats: int = 20,
                    seed: int = 0) -> SparseTiming:
    """Time the model's dense FFN (the HF module) against the sparse forward of the top-k experts.

    Inputs are random vectors scaled like RMS-normalised activations; routing (the router's
    scores) is outside the timed region, on both sides. Works on CPU and CUDA (synchronised).
    """
    k = check_k(k, router.n_experts)
    if n_tokens < 1 or repeats < 1:
        raise ShapeError(f"n_tokens={n_tokens} and repeats={repeats} must be >= 1")
    mlp = session.hf_model.model.layers[router.layer].mlp
    dev, dt = session.device, session.dtype
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n_tokens, session.d_model, generator=gen).to(dev, dt)
    ef = expert_ffn(session, router.experts)
    m = None
    if router.needs_coefficients:
        m = mlp.act_fn(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    chosen = router.scores(x.float(), m).topk(k, dim=-1).indices.to(dev)

    def clock(fn) -> float:
        fn()
        _sync(dev)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2] * 1e3

    dense_ms = clock(lambda: mlp(x))
    sparse_ms = clock(lambda: ef.sparse(x, chosen))
    grouped_ms = clock(lambda: ef.sparse(x, chosen, grouped=True))
    keep = torch.zeros(n_tokens, router.n_experts, dtype=torch.bool, device=dev).scatter_(1, chosen, True)
    h = mlp.act_fn(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    ref = (h * keep[:, router.experts.labels.to(dev)]) @ mlp.down_proj.weight.T
    diff = float((ef.sparse(x, chosen) - ref).abs().max())
    return SparseTiming(router.layer, n_tokens, k, router.n_experts, dense_ms, sparse_ms, str(dev),
                        str(dt).removeprefix("torch."), diff, grouped_ms)
