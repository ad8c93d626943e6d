"""`pick_adam.PickAdam` (gradients as picks, summed inside the Adam update, the decoder's row
constraint in the same pass) against the unfused step train_sae takes without it: the written
gradients, `SAE.remove_parallel_grad`, torch.optim.Adam, `SAE.normalize_decoder`. Several steps
(bias corrections), AuxK on (its decode dense over the candidate columns, which reaches W_dec.grad
through autograd, and through the Triton gathers, a second part in the sink), and the bfloat16
copy of W_enc it keeps against W_enc cast. In Triton's
interpreter (CPU, a subprocess) where Triton is installed, and natively on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from workbench.saes.sparse_decode import triton_decode_available

CHECK = """
from tests.workbench.saes.test_pick_adam import check_pick_adam
check_pick_adam("{device}")
print("same")
"""


def _sae(device):
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.topk_sparse import column_major

    torch.manual_seed(0)
    sae = make_sae(SAEConfig("topk", 24, 96, k=6)).to(device)
    sae.W_enc = column_major(sae.W_enc)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def _fused_opt(sae, low: bool):
    """PickAdam as train_sae makes it (with the bfloat16 copies it keeps under amp when `low`)."""
    from workbench.saes.pick_adam import PickAdam, Picked, PickSink

    n = sae.cfg.d_sae
    sinks = (PickSink(n), PickSink(n))
    sae.lows = ((sae.W_enc.detach().t().to(torch.bfloat16), sae.W_dec.detach().to(torch.bfloat16)) if low
                else (None, None))
    opt = PickAdam(sae.parameters(), {sae.W_enc: Picked(sinks[0], transposed=True, low=sae.lows[0]),
                                      sae.W_dec: Picked(sinks[1], rownorm=True, low=sae.lows[1])}, lr=1e-2)
    return opt, sinks


def _run(device, fused, steps=3, aux_ratio=None):
    import workbench.saes.topk_sparse as ts
    from workbench.saes.topk_sparse import sparse_aux_loss, sparse_topk_step

    sae = _sae(device)
    d_in, d_sae, aux_k, B = 24, 96, 8, 50
    dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
    dead[:30] = True
    cols = torch.arange(40, device=device)          # AuxK's candidate columns hold every dead latent
    if fused:
        opt, sinks = _fused_opt(sae, low=True)      # the copies written, not read (no amp here)
    else:
        sinks = None
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2, fused=device == "cuda")
    ratio = ts.AUX_SPARSE_RATIO
    ts.AUX_SPARSE_RATIO = ratio if aux_ratio is None else aux_ratio
    try:
        for s in range(steps):
            x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(s)).to(device)
            sp = sparse_topk_step(sae, x, dead, aux_k, 30, amp=False, gemm=True, cols=cols, sinks=sinks)
            opt.zero_grad(set_to_none=True)
            ((sp.recon - x).pow(2).sum(-1).mean() + 0.5 * sparse_aux_loss(x, sp)).backward()
            if not fused:
                sae.remove_parallel_grad()
            opt.step()
            if not fused:
                sae.normalize_decoder()
    finally:
        ts.AUX_SPARSE_RATIO = ratio
    return {n: p.detach().clone() for n, p in sae.named_parameters()}, sae


def _check_lows(sae, exact: bool):
    """The kept bfloat16 copies equal W_enc and W_dec cast (the interpreter's cast truncates:
    there within one unit of the last place)."""
    for low, W in zip(sae.lows, (sae.W_enc.detach().t(), sae.W_dec.detach()), strict=True):
        if exact:
            assert torch.equal(low, W.to(torch.bfloat16))
        else:
            torch.testing.assert_close(low.float(), W.to(torch.bfloat16).float(), rtol=2 ** -7, atol=0)


def check_pick_adam(device="cpu"):
    for aux_ratio in (None, 0):     # AuxK dense over its columns (W_dec.grad), or gathered (a second sink part)
        want, _ = _run(device, fused=False, aux_ratio=aux_ratio)
        got, sae = _run(device, fused=True, aux_ratio=aux_ratio)
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=2e-6, msg=f"{n} aux_ratio={aux_ratio}")
        norms = sae.W_dec.detach().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert sae.W_enc.stride() == (1, sae.W_enc.shape[0])           # still column-major
        _check_lows(sae, exact=device != "cpu")


def check_amp_copies(device="cuda"):
    """Under amp (CUDA) the step reads the kept bfloat16 copies: the reconstruction equals the
    float32-decoder step's to bfloat16 rounding, the decoder gradient left in the sink equals
    S^T d(loss)/d(recon) computed densely, and after the update the copies equal the casts."""
    from workbench.saes.topk_sparse import sparse_topk_step

    x = torch.randn(50, 24, generator=torch.Generator().manual_seed(0)).to(device)
    ref = sparse_topk_step(_sae(device), x, amp=True, gemm=True)
    sae = _sae(device)
    opt, sinks = _fused_opt(sae, low=True)
    sp = sparse_topk_step(sae, x, amp=True, gemm=True, sinks=sinks, w_enc_low=sae.lows[0].t(),
                          w_dec_low=sae.lows[1])
    assert torch.equal(sp.idx, ref.idx)
    torch.testing.assert_close(sp.recon, ref.recon, rtol=2e-2, atol=2e-2)
    (sp.recon - x).pow(2).sum(-1).mean().backward()
    (src, idx, coef), = sinks[1].parts
    got = torch.zeros(96, len(src), device=device).scatter_add_(0, idx.t(), coef.t().float()) @ src.float()
    S = torch.zeros(50, 96, device=device).scatter_add_(1, sp.idx, sp.vals.float())
    want = S.t() @ (2 * (sp.recon - x).detach() / len(x))
    torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-3)
    opt.step()
    _check_lows(sae, exact=True)


def test_rows_view_checked():
    """A picked parameter whose rows view is not a contiguous float32 matrix: one clear error."""
    from workbench.saes.pick_adam import PickAdam, Picked, PickSink

    W = torch.nn.Parameter(torch.zeros(24, 96))                      # row-major: W.t() is not contiguous
    with pytest.raises(ValueError, match=r"contiguous float32 \[96 d\].*\(96, 24\)"):
        PickAdam([W], {W: Picked(PickSink(96), transposed=True)})
    with pytest.raises(ValueError, match="float32"):
        V = torch.nn.Parameter(torch.zeros(96, 24, dtype=torch.bfloat16))
        PickAdam([V], {V: Picked(PickSink(96))})


def test_sink_checks_shapes():
    from workbench.saes.pick_adam import PickSink

    with pytest.raises(ValueError, match=r"idx \(4, 3\) and coef \(4, 2\)"):
        PickSink(10).add(torch.zeros(4, 5), torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 2))


@pytest.mark.skipif(not triton_decode_available(), reason="Triton not installed (CPU torch wheel)")
def test_pick_adam_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORKBENCH_TYPECHECK", None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    got = subprocess.run([sys.executable, "-c", CHECK.format(device="cpu")], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert got.returncode == 0 and got.stdout.strip().endswith("same"), got.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_decode_available(), reason="needs CUDA")
def test_pick_adam_on_cuda():
    check_pick_adam("cuda")
    check_amp_copies("cuda")
