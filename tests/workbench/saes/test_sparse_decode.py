"""sparse_decode equals the dense product codes @ W, in value and in both gradients: the
embedding_bag form always, the Triton kernels in Triton's interpreter (CPU, a subprocess with
TRITON_INTERPRET=1) where Triton is installed and natively on CUDA; and the sparse SAE step with
the kernels (CUDA's form) equals the dense step."""

from __future__ import annotations

import pytest
import torch

from tests.workbench.saes._interpret import run_interpreted
from workbench.saes.sparse_decode import sparse_decode, triton_decode_available


def _case(device="cpu", B=7, m=20, n=50, d=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(n, generator=g)[:m] for _ in range(B)])
    if m > 1:
        idx[0, 1] = idx[0, 0]                   # a row picked twice within one token: terms add
    vals = torch.randn(B, m, generator=g)
    W = torch.randn(n, d, generator=g)
    grad = torch.randn(B, d, generator=g)
    return [t.to(device) for t in (idx, vals, W, grad)]


def _dense(idx, vals, W, grad):
    v = vals.clone().requires_grad_()
    w = W.clone().requires_grad_()
    B, m = idx.shape
    rows = torch.arange(B, device=idx.device)[:, None].expand(B, m)
    codes = torch.zeros(B, W.shape[0], device=W.device).index_put((rows, idx), v, accumulate=True)
    out = codes @ w
    out.backward(grad)
    return out.detach(), v.grad, w.grad


def check_against_dense(device="cpu", triton=None):
    for B, m, n, d in [(7, 20, 50, 300), (3, 16, 40, 128), (1, 1, 5, 7)]:
        idx, vals, W, grad = _case(device, B, m, n, d)
        v = vals.clone().requires_grad_()
        w = W.clone().requires_grad_()
        out = sparse_decode(idx, v, w, triton=triton)
        out.backward(grad)
        want = _dense(idx, vals, W, grad)
        for got, exp, what in zip((out, v.grad, w.grad), want, ("out", "d vals", "d W"), strict=True):
            torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-4, msg=what)


def test_embedding_bag_form_equals_dense():
    check_against_dense(triton=False)


def test_shapes_checked():
    """Mismatched idx / vals: our ValueError, or jaxtyping's TypeCheckError where the suite's
    type-check hook runs first (WORKBENCH_TYPECHECK=1); either names both shapes."""
    from jaxtyping import TypeCheckError

    idx, vals, W, _ = _case()
    with pytest.raises((ValueError, TypeCheckError)) as err:
        sparse_decode(idx, vals[:, :19], W)
    if err.type is ValueError:
        assert "idx (7, 20) and vals (7, 19) must both be [batch m]" in str(err.value)
    else:                                   # jaxtyping names the bound size and the clashing one
        assert "m=20" in str(err.value) and "19" in str(err.value), str(err.value)


STEP_CHECK = """
import torch
from tests.workbench.saes.test_sparse_decode import (check_against_dense, check_column_major, check_outer, check_rows,
                                                     check_sparse_step)
dev = "{device}"
check_outer(dev)
check_column_major(dev)
check_against_dense(dev, triton=True)
check_sparse_step(dev)
check_rows(dev)
print("same")
"""


def check_outer(device="cpu"):
    """`_triton_outer.sparse_outer` (the SAE step's dW_enc and dW_dec) against src^T S with S
    built densely: repeated columns in a row, a column with more picks than a program's block,
    widths off the block size; `low` against the same product with src rounded to
    bfloat16."""
    from workbench.saes._triton_outer import BLOCK_P, sparse_outer

    g = torch.Generator().manual_seed(1)
    for R, m, n, d in [(7, 20, 50, 300), (3, 16, 40, 128), (1, 1, 5, 7), (80, 8, 100, 33)]:
        idx = torch.randint(0, n, (R, m), generator=g)
        idx[0, -1] = idx[0, 0]
        if R > BLOCK_P:
            idx[:, 0] = 3                               # one column picked by every row
        coef, src = torch.randn(R, m, generator=g), torch.randn(R, d, generator=g)
        for low in (False, True):
            rnd = (lambda t: t.bfloat16().float()) if low else (lambda t: t)
            S = torch.zeros(R, n).index_put((torch.arange(R)[:, None].expand(R, m), idx), coef, accumulate=True)
            want = rnd(src).t() @ S
            got = sparse_outer(src.to(device), idx.to(device), coef.to(device), n, low=low)
            torch.testing.assert_close(got.cpu(), want.t(), rtol=1e-5, atol=1e-5,
                                       msg=f"R={R} m={m} n={n} d={d} low={low}")


def check_column_major(device="cpu"):
    """train_sae's layout for the Triton step: W_enc stored column-major (`column_major`) takes
    its gradient as a view of the same layout (no copy) and one Adam step (fused on CUDA) gives
    the same parameters as the row-major W_enc."""
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.topk_sparse import column_major, sparse_topk_step

    torch.manual_seed(0)
    x = torch.randn(40, 24, device=device)
    after = []
    for cm in (False, True):
        torch.manual_seed(1)
        sae = make_sae(SAEConfig("topk", 24, 96, k=6)).to(device)
        if cm:
            sae.W_enc = column_major(sae.W_enc)
            assert sae.W_enc.stride() == (1, 24)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2, fused=device == "cuda")
        sp = sparse_topk_step(sae, x, None, 0, 0, amp=False, gemm=True)
        (sp.recon - x).pow(2).sum(-1).mean().backward()
        assert sae.W_enc.grad.stride() == sae.W_enc.stride()
        opt.step()
        after.append({n: p.detach().clone() for n, p in sae.named_parameters()})
    for n in after[0]:
        torch.testing.assert_close(after[1][n], after[0][n], rtol=1e-6, atol=1e-7, msg=n)


def check_sparse_step(device="cpu"):
    """The SAE step CUDA takes (Triton decode, dense dW_enc GEMM, AuxK decoded densely over the
    candidate columns, or by the Triton gathers when the columns outnumber its picks enough)
    against the dense step, fp32."""
    import workbench.saes.topk_sparse as ts

    ratio = ts.AUX_SPARSE_RATIO
    try:
        for r in (ratio, 0):                  # 0: AuxK through the Triton gathers as well
            ts.AUX_SPARSE_RATIO = r
            _check_sparse_step(device)
    finally:
        ts.AUX_SPARSE_RATIO = ratio


def _check_sparse_step(device):
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.topk_sparse import sparse_aux_loss, sparse_topk_step
    from workbench.saes.train import aux_loss

    torch.manual_seed(0)
    d_in, d_sae, k, aux_k, B = 24, 96, 6, 8, 50
    sae = make_sae(SAEConfig("topk", d_in, d_sae, k=k)).to(device)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(B, d_in, device=device)
    dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
    dead[:30] = True
    out = sae(x)
    ((out.recon - x).pow(2).sum(-1).mean() + 0.5 * aux_loss(sae, x, out, dead, aux_k, 30)).backward()
    want = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    sp = sparse_topk_step(sae, x, dead, aux_k, 30, amp=False, gemm=True)
    ((sp.recon - x).pow(2).sum(-1).mean() + 0.5 * sparse_aux_loss(x, sp)).backward()
    torch.testing.assert_close(sp.recon, out.recon, rtol=1e-5, atol=1e-5)
    for n, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-5, msg=n)


def check_rows(device="cpu"):
    """The decoder-row kernels (`_triton_rows`, taken by `SAE.normalize_decoder` and
    `remove_parallel_grad` where `use_triton_decode`) against the torch formulas."""
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.sparse_decode import use_triton_decode

    for d_in, d_sae in [(300, 40), (64, 16)]:
        sae = make_sae(SAEConfig("topk", d_in, d_sae, k=4)).to(device)
        assert use_triton_decode(sae.W_dec)
        with torch.no_grad():
            sae.W_dec.normal_()
            sae.W_dec[3] = 0                       # a zero row: the norm's clamp
        W = sae.W_dec.detach().clone()
        G = torch.randn_like(W)
        sae.W_dec.grad = G.clone()
        sae.remove_parallel_grad()
        u = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        torch.testing.assert_close(sae.W_dec.grad, G - (G * u).sum(-1, keepdim=True) * u, rtol=1e-5, atol=1e-5)
        sae.normalize_decoder()
        torch.testing.assert_close(sae.W_dec.detach(), u, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not triton_decode_available(), reason="Triton not installed (CPU torch wheel)")
def test_triton_kernels_in_interpreter():
    run_interpreted(STEP_CHECK.format(device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_decode_available(), reason="needs CUDA")
def test_triton_kernels_on_cuda():
    check_outer("cuda")
    check_column_major("cuda")
    check_against_dense("cuda", triton=True)
    check_sparse_step("cuda")
    check_rows("cuda")


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_decode_available(), reason="needs CUDA")
def test_amp_sparse_step_on_cuda_agrees_with_dense_autocast():
    """Under amp the sparse step computes the pre-activations in bfloat16 with the bias (the
    dense step adds the bias in float32 after a bfloat16 product): same loss to bf16 precision."""
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.topk_sparse import sparse_topk_step
    from workbench.saes.train import dense_step_loss

    torch.manual_seed(0)
    sae = make_sae(SAEConfig("topk", 256, 4096, k=32)).cuda()
    x = torch.randn(512, 256, device="cuda")
    dead = torch.zeros(4096, dtype=torch.bool, device="cuda")
    loss = dense_step_loss(sae, x, dead, 0, 0, None, 0.0, True)[1]
    sp = sparse_topk_step(sae, x, dead, 0, 0, amp=True)
    mse = (sp.recon - x).pow(2).sum(-1).mean()
    assert sp.recon.dtype == torch.float32
    torch.testing.assert_close(mse, loss.float(), rtol=1e-2, atol=0)
