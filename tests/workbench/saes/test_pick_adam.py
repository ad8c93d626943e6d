"""`pick_adam.PickAdam` (gradients as picks, summed inside the Adam update, the decoder's row
constraint in the same pass) against the unfused step train_sae takes without it: the written
gradients, `SAE.remove_parallel_grad`, torch.optim.Adam, `SAE.normalize_decoder`. Several steps
(bias corrections), AuxK on (its decode dense over the candidate columns, which reaches W_dec.grad
through autograd, and through the Triton gathers, a second part in the sink), and the bfloat16
copy of W_enc it keeps against W_enc cast. In Triton's
interpreter (CPU, a subprocess) where Triton is installed, and natively on CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.workbench.saes._interpret import run_interpreted
from workbench.saes.sparse_decode import triton_decode_available

CHECK = """
from tests.workbench.saes.test_pick_adam import check_grad_only, check_pick_adam, check_train_sae
check_pick_adam("{device}")
check_grad_only("{device}")
check_train_sae("{device}")
print("same")
"""


def _run(device, fused, steps=3, aux_ratio=None, amp=False):
    import workbench.saes.topk_sparse as ts
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.pick_adam import sae_pick_adam
    from workbench.saes.topk_sparse import column_major, sparse_aux_loss, sparse_topk_step

    d_in, d_sae, k, aux_k, B = 24, 96, 6, 8, 50
    torch.manual_seed(0)
    sae = make_sae(SAEConfig("topk", d_in, d_sae, k=k)).to(device)
    sae.W_enc = column_major(sae.W_enc)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
    dead[:30] = True
    cols = torch.arange(40, device=device)          # AuxK's candidate columns hold every dead latent
    if fused:       # as train_sae makes it, with the bfloat16 W_enc it keeps under amp (written here either way)
        opt, sinks, sae.low = sae_pick_adam(sae, 1e-2, low=True)
    else:
        sinks = None
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2, fused=device == "cuda")
    ratio = ts.AUX_SPARSE_RATIO
    ts.AUX_SPARSE_RATIO = ratio if aux_ratio is None else aux_ratio
    try:
        for s in range(steps):
            x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(s)).to(device)
            sp = sparse_topk_step(sae, x, dead, aux_k, 30, amp=amp, gemm=True, cols=cols, sinks=sinks,
                                  w_enc_low=sae.low if fused and amp else None)
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


def check_pick_adam(device="cpu"):
    """On CUDA also under amp, the fused run's encoder GEMM reading the kept bfloat16 copy: one
    step there (after it the two runs' W_enc differ by float rounding, which can move a bfloat16
    pre-activation across a tie and change a pick)."""
    for aux_ratio, amp in [(None, False), (0, False)] + ([(None, True)] if device == "cuda" else []):
        # AuxK dense over its columns (W_dec.grad), or gathered (a second part in the sink)
        steps = 1 if amp else 3
        want, _ = _run(device, fused=False, aux_ratio=aux_ratio, amp=amp, steps=steps)
        got, sae = _run(device, fused=True, aux_ratio=aux_ratio, amp=amp, steps=steps)
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=2e-6, msg=f"{n} aux_ratio={aux_ratio} amp={amp}")
        norms = sae.W_dec.detach().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert sae.W_enc.stride() == (1, sae.W_enc.shape[0])           # still column-major
        want_low = sae.W_enc.detach().to(torch.bfloat16)
        if device == "cpu":          # the interpreter's bfloat16 cast truncates: within one unit of the last place
            torch.testing.assert_close(sae.low.float(), want_low.float(), rtol=2 ** -7, atol=0)
        else:
            assert torch.equal(sae.low, want_low)


def check_grad_only(device="cpu"):
    """A picked parameter that got a .grad and no picks steps as torch.optim.Adam after
    `remove_parallel_grad`, then `normalize_decoder` (the sink's picks empty, the grad as `extra`)."""
    from workbench.saes import SAEConfig
    from workbench.saes.models import make_sae
    from workbench.saes.pick_adam import PickAdam, Picked, PickSink

    torch.manual_seed(0)
    saes = [make_sae(SAEConfig("topk", 24, 96, k=6)).to(device) for _ in range(2)]
    saes[1].load_state_dict(saes[0].state_dict())
    G = torch.randn(96, 24, generator=torch.Generator().manual_seed(3)).to(device)
    ref = torch.optim.Adam([saes[0].W_dec], lr=1e-2)
    opt = PickAdam([saes[1].W_dec], {saes[1].W_dec: Picked(PickSink(96), rownorm=True)}, lr=1e-2)
    for _ in range(2):
        for sae in saes:
            sae.W_dec.grad = G.clone()
        saes[0].remove_parallel_grad()
        ref.step()
        saes[0].normalize_decoder()
        opt.step()
    torch.testing.assert_close(saes[1].W_dec, saes[0].W_dec, rtol=1e-5, atol=2e-6)


def check_train_sae(device="cpu"):
    """`train_sae` end to end on the tiny model (AuxK on, the schedule, the end's layout and
    scale folding): with `PickAdam` (the default where Triton runs) the trained SAE equals the
    one trained with the unfused step (`train.PICK_ADAM = False`)."""
    import tempfile

    import workbench.saes.train as train_module
    from tests.conftest import ROOT
    from workbench import Corpus
    from workbench.saes import SAEConfig, TrainConfig, train_sae
    from workbench.testing import tiny_session

    s = tiny_session("llama", tokenizer_dir=tempfile.mkdtemp(), device=device)
    corpus = Corpus.load(ROOT / "data" / "corpus" / "tiny_corpus.txt", s.tokenizer, max_tokens=8000)
    cfg = SAEConfig("topk", s.d_model, 128, site="resid_post:1", k=4)
    tc = TrainConfig(total_tokens=1024, batch_size=128, buffer_tokens=512, window=32, tokens_per_forward=512,
                     lr=2e-3, warmup_steps=2, eval_tokens=0, dead_after_tokens=256, aux_k=16,
                     amp=False)   # on CUDA: bfloat16 casts of weights that differ by rounding could change picks
    flag = train_module.PICK_ADAM
    got = {}
    try:
        for fused in (False, True):
            train_module.PICK_ADAM = fused
            res = train_sae(s, corpus, cfg, tc, progress=False)
            assert res.history[-1]["dead"] > 0 or any(h["dead"] for h in res.history)   # AuxK ran
            got[fused] = res.sae.state_dict()
    finally:
        train_module.PICK_ADAM = flag
    for n, t in got[False].items():
        torch.testing.assert_close(got[True][n], t, rtol=1e-4, atol=1e-5, msg=n)
        assert got[True][n].stride() == t.stride(), n                 # W_enc row-major again at the end


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
    """Mismatched idx / coef: our ValueError, or jaxtyping's TypeCheckError where the suite's
    type-check hook runs first (WORKBENCH_TYPECHECK=1); either names both sizes."""
    from jaxtyping import TypeCheckError

    from workbench.saes.pick_adam import PickSink

    with pytest.raises((ValueError, TypeCheckError)) as err:
        PickSink(10).add(torch.zeros(4, 5), torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 2))
    if err.type is ValueError:
        assert "idx (4, 3) and coef (4, 2)" in str(err.value)
    else:
        assert "m=3" in str(err.value) and "2" in str(err.value), str(err.value)


@pytest.mark.skipif(not triton_decode_available(), reason="Triton not installed (CPU torch wheel)")
def test_pick_adam_in_interpreter():
    run_interpreted(CHECK.format(device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_decode_available(), reason="needs CUDA")
def test_pick_adam_on_cuda():
    check_pick_adam("cuda")
    check_grad_only("cuda")
    check_train_sae("cuda")
