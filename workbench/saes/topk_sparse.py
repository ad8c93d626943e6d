"""A TopK SAE training step whose decoder costs grow with k, not with the dictionary's width.

The dense step (`TopKSAE.forward` + autograd) spends six [B d_sae d_in] matmuls per batch: the
encoder (needed: every pre-activation decides the top k), its backward for W_enc and for b_dec
(through x - b_dec), the decoder and its two backward products. Only the picked
pre-activations carry gradient, and only picked decoder rows are read, so here

    pre      = (x - b_dec) W_enc + b_enc            dense, no autograd (chooses the latents)
    picked   = pre[b, idx[b, j]]                    `_PickedPre`
    x^       = sum_j relu(picked_bj) W_dec[idx_bj] + b_dec     `sparse_decode` (picked rows only)

`_PickedPre`'s backward, with G the [B d_sae] sparse matrix of the picked entries' gradients:
    dW_enc = (x - b_dec)^T G      CUDA: `_triton_outer.sparse_outer` (the picks sorted by latent,
                                  each latent's gradient column summed from its picks and written
                                  once; x - b_dec read in bfloat16 under amp, as the dense step's
                                  autocast); without Triton G scattered dense and one GEMM; CPU:
                                  a sparse-dense product
    db_enc = column sums of G     db_dec (encoder side) = -W_enc (column sums of G)  (a GEMV)
The AuxK picks (top `aux_k` among dead latents) go through `_PickedPre` too; their decode is
`sparse_decode` on the CPU and, on CUDA, a dense product over the candidate columns (256 picks
per row would cost more as gathers than [B n_cols] GEMMs while few latents are dead). Values and
gradients equal the dense step's (`tests/workbench/saes/test_topk_sparse.py`); the speed is
measured in benches/sae.py, benches/sae_step.py and benches/sae_loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._types import Float, Tensor
from .sparse_decode import sparse_decode, triton_decode_available, use_triton_decode
from .topk import TopKSAE

__all__ = ["SparseStep", "sparse_topk_step", "sparse_aux_loss", "use_sparse_step", "column_major"]

# AuxK's decode on CUDA: the Triton gathers cost about 0.08 ms per pick per row (B 4096, d_in
# 4096, H200), the three dense [B n_cols] GEMMs about 1.3e-4 ms per column: sparse pays when
# n_cols > 600 picks (e.g. 55 dead latents among 131,072 candidate columns)
AUX_SPARSE_RATIO = 600
# dW_enc by `_triton_outer.sparse_outer` where the Triton kernels run (False: the scattered dense
# G and one GEMM, session 17's form; benches/sae_step.py --outer gemm compares the two)
TRITON_OUTER = True


def use_sparse_step(sae, device: torch.device, setting: bool | None) -> bool:
    """Whether `train_sae` takes the sparse step: `setting` if given, else for TopK SAEs on the
    CPU, and on CUDA where Triton is installed (it comes with torch's CUDA wheels).

    On an H200 (d_in 4096, batch 4096, AuxK on 10% dead latents) the sparse step with the Triton
    decode took 35.0 ms against the dense step's 47.1 at 65,536 latents, 56.6 against 101.9 at
    131,072 (benches/sae_step.py, docs/GPU.md session 17; its cuSPARSE form of session 14 was
    slower than dense). On 2 CPU cores the sparse step is 2.9x faster (benches/sae.py --shape tiny).
    """
    if setting is not None:
        return bool(setting) and isinstance(sae, TopKSAE)
    if device.type == "cuda":
        return isinstance(sae, TopKSAE) and triton_decode_available()
    return isinstance(sae, TopKSAE)


def column_major(W: Tensor) -> torch.nn.Parameter:
    """W [d_in d_sae] as a parameter stored column-major (each latent's encoder column
    contiguous), same values. The Triton step's dW_enc is computed latent by latent
    (`_triton_outer`); a row-major W_enc would cost a transposing copy of the whole gradient
    per step (about 4 ms at 131,072 x 4096 on an H200). The encoder GEMM reads either layout."""
    return torch.nn.Parameter(W.detach().t().contiguous().t(), requires_grad=W.requires_grad)


def gemm_dtype(x: Tensor, W_enc: Tensor, amp: bool = False, gemm: bool | None = None) -> torch.dtype | None:
    """`_PickedPre`'s dW_enc: by one dense GEMM in this dtype (default on CUDA; bfloat16 under
    amp, as the dense step's autocast), or None for the sparse-dense product (the CPU's)."""
    if not (x.is_cuda if gemm is None else gemm):
        return None
    return torch.bfloat16 if amp and x.is_cuda else W_enc.dtype


class _PickedPre(torch.autograd.Function):
    """Picked pre-activations with a gradient that reaches W_enc, b_enc, b_dec sparsely."""

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, idx, picked, gemm_dtype, sink):  # type: ignore[override]
        ctx.save_for_backward(x, b_dec, W_enc, idx)
        ctx.gemm_dtype = gemm_dtype      # None: sparse product (CPU)
        ctx.sink = sink                  # a pick_adam.PickSink: dW_enc left as picks
        return picked

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, b_dec, W_enc, idx = ctx.saved_tensors
        B, m = idx.shape
        d_sae = W_enc.shape[1]
        g = g.float().reshape(-1)
        cols = idx.reshape(-1)
        colsum = torch.zeros(d_sae, device=g.device, dtype=torch.float32).index_add_(0, cols, g)
        gW = gb = gbd = None
        if ctx.needs_input_grad[2] and ctx.sink is not None:
            low = ctx.gemm_dtype == torch.bfloat16
            ctx.sink.add((x.float() - b_dec.float()).to(torch.bfloat16 if low else torch.float32), idx, g.view(B, m))
        elif ctx.needs_input_grad[2] and ctx.gemm_dtype is not None and TRITON_OUTER and use_triton_decode(W_enc):
            from ._triton_outer import sparse_outer

            xc = x.float() - b_dec.float()
            gT = sparse_outer(xc, idx, g.view(B, m), d_sae, low=ctx.gemm_dtype == torch.bfloat16
                              ).to(W_enc.dtype)                                         # [d_sae d_in]
            # W_enc in column-major storage (`column_major`, as train_sae keeps it): the
            # transposed view has its layout (no copy); else one transposing copy
            gW = gT.t() if W_enc.stride() == gT.t().stride() else gT.t().contiguous()
        elif ctx.needs_input_grad[2] and ctx.gemm_dtype is not None:
            dt = ctx.gemm_dtype
            G = torch.zeros(B, d_sae, device=g.device, dtype=dt).scatter_add_(1, idx, g.view(B, m).to(dt))
            xc = (x.float() - b_dec.float()).to(dt)
            gW = (xc.t() @ G).to(W_enc.dtype)                              # [d_in d_sae]
        elif ctx.needs_input_grad[2]:
            rows = torch.arange(B, device=g.device).repeat_interleave(m)
            gt = torch.sparse_coo_tensor(torch.stack([cols, rows]), g, (d_sae, B), check_invariants=False)
            xc = (x.float() - b_dec.float())
            gW = torch.sparse.mm(gt, xc).t().to(W_enc.dtype)          # [d_in d_sae]
        if ctx.needs_input_grad[3]:
            gb = colsum.to(W_enc.dtype)
        if ctx.needs_input_grad[1]:
            gbd = -(W_enc.float() @ colsum).to(b_dec.dtype)
        return None, gbd, gW, gb, None, None, None, None


@dataclass(frozen=True)
class SparseStep:
    """One sparse TopK pass: reconstruction [B d_in], the k picks (idx, values after ReLU
    [B k]), and the AuxK reconstruction of the dead latents' picks (None when off)."""

    recon: Tensor
    idx: Tensor
    vals: Tensor
    aux_recon: Tensor | None

    def l0(self) -> Tensor:
        return (self.vals > 0).float().sum(-1).mean()

    def fired(self, d_sae: int) -> Tensor:
        hits = torch.zeros(d_sae, device=self.idx.device)      # no boolean index: no host sync
        return hits.index_add_(0, self.idx.reshape(-1), (self.vals > 0).reshape(-1).float()) > 0


def sparse_topk_step(sae: TopKSAE, x: Float[Tensor, "batch d_in"], dead: Tensor | None = None,
                     aux_k: int = 0, n_dead: int | None = None, amp: bool = False,
                     cols: Tensor | None = None, gemm: bool | None = None, sinks=None,
                     w_enc_low: Tensor | None = None) -> SparseStep:
    """The TopK forward of a training step, sparse in its decoder and encoder gradient.

    Args:
        x: [B d_in] activations (no gradient).
        dead: [d_sae] bool, latents that count as dead for AuxK (None or aux_k = 0: no AuxK).
        n_dead: a (possibly stale) host-side count of dead latents, as `train.aux_loss` takes
            it: min(aux_k, n_dead) latents are picked; 0 turns AuxK off.
        amp: compute the dense pre-activations in bfloat16 (CUDA), as the dense step's autocast.
        cols: latent indices holding every dead latent (`train.aux_candidates`): AuxK picks
            among those columns only.
        gemm: dW_enc by one dense GEMM and AuxK's decode dense over the candidate columns
            (default: on CUDA; the CPU takes the sparse products).
        sinks: (W_enc's, W_dec's) `pick_adam.PickSink`: those gradients are left as picks for
            `pick_adam.PickAdam` (Triton only; AuxK's dense decode still writes W_dec.grad).
        w_enc_low: W_enc in bfloat16 [d_in d_sae], kept by the optimiser (`pick_adam.Picked.low`),
            used under amp instead of casting W_enc each step.
    """
    enc_sink, dec_sink = sinks if sinks is not None else (None, None)
    k = sae.cfg.k
    with torch.no_grad():
        if amp and x.is_cuda:    # bfloat16 out, bias included: the top-k reads half the bytes
            bf = torch.bfloat16
            xc = (x.to(sae.W_enc.dtype) - sae.b_dec).to(bf)
            w = sae.W_enc.to(bf) if w_enc_low is None else w_enc_low
            pre = torch.addmm(sae.b_enc.to(bf), xc, w)
        else:
            pre = sae.pre_acts(x)
        top_v, top_i = pre.topk(k, dim=-1)
        idx, valid, aux_local = top_i, None, None
        n_aux = 0
        n_dead = int(dead.sum()) if dead is not None and n_dead is None else n_dead
        if dead is not None and aux_k > 0 and n_dead and (cols is None or len(cols)):
            sub, sub_dead = (pre, dead) if cols is None else (pre[:, cols], dead[cols])
            masked = sub.masked_fill(~sub_dead, float("-inf"))
            # picks in powers of two (the extras are -inf, weight 0): few shapes as n_dead moves
            n_pick = min(aux_k, 1 << (n_dead - 1).bit_length(), masked.shape[1])
            aux_v, aux_i = masked.topk(n_pick, dim=-1)
            aux_local = aux_i
            if cols is not None:
                aux_i = cols[aux_i]
            n_aux = aux_i.shape[1]
            idx = torch.cat([top_i, aux_i], 1)
            valid = aux_v > float("-inf")
            picked_vals = torch.cat([top_v, pre.gather(-1, aux_i)], 1)
        else:
            picked_vals = top_v
    dt = gemm_dtype(x, sae.W_enc, amp, gemm)
    picked = _PickedPre.apply(x, sae.b_dec, sae.W_enc, sae.b_enc, idx, picked_vals.float(), dt, enc_sink)
    act = torch.relu(picked).to(sae.W_dec.dtype)
    vals = act[:, :k]
    recon = sparse_decode(top_i, vals, sae.W_dec, sink=dec_sink) + sae.b_dec
    aux = None
    if n_aux and valid is not None and aux_local is not None:
        w = act[:, k:] * valid.to(act.dtype)
        n_cols = sae.cfg.d_sae if cols is None else len(cols)
        if dt is not None and not (use_triton_decode(sae.W_dec) and n_cols > AUX_SPARSE_RATIO * n_aux):
            # dense over the candidate columns (module docstring), padded to a multiple of 64
            # columns (the pad repeats column 0 with zero codes): misaligned GEMMs ran 3x slower
            W: Tensor = sae.W_dec
            if cols is not None:
                W = W[torch.cat([cols, cols.new_zeros(-len(cols) % 64)])]
            codes = torch.zeros(len(x), len(W), device=x.device, dtype=w.dtype).scatter(1, aux_local, w)
            with torch.autocast("cuda", torch.bfloat16, enabled=amp and x.is_cuda):
                aux = codes @ W
        else:
            aux = sparse_decode(idx[:, k:], w, sae.W_dec, sink=dec_sink)
    return SparseStep(recon, top_i, vals.detach(), aux)


def sparse_aux_loss(x: Tensor, step: SparseStep) -> Tensor:
    """AuxK as `train.aux_loss`: ||e - e^_dead||^2 / ||e||^2 with e = x - x^ (detached)."""
    if step.aux_recon is None:
        return x.new_zeros(())
    e = (x - step.recon).detach()
    return (e - step.aux_recon).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)
