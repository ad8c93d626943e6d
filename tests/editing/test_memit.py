"""MEMIT and AlphaEdit on the tiny model: the least-squares solve, the null space, bad inputs."""

from __future__ import annotations

import pytest
import torch

from editing import (
    AlphaEditConfig,
    AlphaEditState,
    EditError,
    EditRequest,
    KeyStats,
    MemitConfig,
    apply,
    compute_alphaedit_update,
    compute_memit_update,
    critical_layers,
    locate_subject,
    null_space_projector,
)
from editing.alphaedit import alphaedit_solve
from editing.rome import context_prefixes
from workbench.errors import TokenError, WorkbenchError

REQ = EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome")
REQ2 = EditRequest("Rome is the capital of", "Rome", "France")
FAST = dict(prefix_lengths=(3,), prefixes_per_length=1, steps=4, pin_prompt=False)


def test_memit_batch_of_one_is_the_least_squares_update(tiny, stats0, param_bytes):
    cfg = MemitConfig(layers=(0,), lam=50.0, **FAST)
    before = param_bytes(tiny)
    up = compute_memit_update(tiny, [REQ], {0: stats0}, cfg)
    assert param_bytes(tiny) == before                                  # compute never writes
    # keys, independently: mlp_post at the subject's last token of each prefixed prompt (bridge)
    import workbench as wb

    sps = [locate_subject(tiny, p + REQ.prompt, REQ.subject, search_from=len(p))
           for p in context_prefixes(tiny, cfg)]
    ks = [wb.capture(tiny, tiny.batch_from_ids([list(sp.ids)]), ["mlp_post:0"])["mlp_post:0"][0, sp.last]
          for sp in sps]
    K = torch.stack(ks).mean(0, keepdim=True).double()
    torch.testing.assert_close(up.keys[0].double(), K, rtol=1e-4, atol=1e-5)
    h = wb.capture(tiny, tiny.batch_from_ids([list(sps[0].ids)]), ["resid_post:0"])["resid_post:0"][0, sps[0].last]
    R = up.info["z"].double() - h.double()[None]
    # min |K D - R|^2 + lam tr(D^T C D), as one stacked least-squares problem [K; sqrt(lam) L^T] D = [R; 0]
    C = stats0.moment.double()
    L = torch.linalg.cholesky(C + 1e-10 * torch.eye(C.shape[0], dtype=C.dtype))
    A = torch.cat([K, cfg.lam ** 0.5 * L.T])
    B = torch.cat([R, torch.zeros(C.shape[0], R.shape[1], dtype=R.dtype)])
    D = torch.linalg.lstsq(A, B, driver="gelsd").solution
    torch.testing.assert_close(up.deltas[0].double(), D, rtol=2e-3, atol=1e-5)
    assert torch.linalg.matrix_rank(up.deltas[0].double(), rtol=1e-6) == 1


def test_memit_reaches_its_targets_with_small_lambda(tiny, stats0):
    up = compute_memit_update(tiny, [REQ, REQ2], {0: stats0}, MemitConfig(layers=(0,), lam=1e-3, **FAST))
    K = up.keys[0].double()
    # with lambda -> 0 the batch's keys are mapped onto their residual targets: K D ~ Z - h
    R = (up.info["z"] - up.info["h0"]).double()
    assert R.norm(dim=-1).min() > 0
    torch.testing.assert_close(K @ up.deltas[0].double(), R, rtol=0, atol=0.02 * float(R.abs().max()))
    assert up.deltas[0].shape == (tiny.d_mlp, tiny.d_model) and K.shape == (2, tiny.d_mlp)


def test_null_space_projection_keeps_preserved_outputs(tiny, small_corpus_path, tmp_path, param_bytes):
    # statistics of 127 tokens: rank < d_mlp = 256, so the null space is exact
    import workbench as wb
    from editing import key_stats
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=2000)
    st = key_stats(tiny, 0, corpus, n_tokens=128, directory=tmp_path, progress=False)
    state = AlphaEditState.from_stats({0: st}, null_energy=1e-9)
    assert 0 < state.ranks[0] < tiny.d_mlp
    before = param_bytes(tiny)
    up = compute_alphaedit_update(tiny, [REQ, REQ2], state, AlphaEditConfig(layers=(0,), **FAST))
    assert param_bytes(tiny) == before
    win = next(corpus.batches(tiny, window=128, tokens_per_batch=128, max_tokens=128, progress=False)).tokens
    tb = tiny.batch_from_ids(win.tolist())
    out0 = wb.capture(tiny, tb, ["mlp_out:0"])["mlp_out:0"]
    with apply(tiny, up):
        out1 = wb.capture(tiny, tb, ["mlp_out:0"])["mlp_out:0"]
        moved = (up.keys[0] @ up.deltas[0]).norm()
    assert moved > 1e-3                                                   # the edit does something
    # float tolerance: W + D is rounded to float32 (the preserved outputs move ~1e-7 of ~1e-2)
    torch.testing.assert_close(out1, out0, rtol=0, atol=1e-4 * float(out0.abs().max()))
    assert float((out1 - out0).abs().max()) < 1e-4 * float(moved)
    assert param_bytes(tiny) == before


def test_projected_solve_lies_in_the_null_space():
    g = torch.Generator().manual_seed(0)
    K0 = torch.randn(40, 96, generator=g, dtype=torch.float64)
    P, rank = null_space_projector(K0.T @ K0 / 40, energy=1e-9)
    assert rank == 96 - 40
    K, R = torch.randn(3, 96, generator=g), torch.randn(3, 16, generator=g)
    prev = torch.randn(5, 96, generator=g, dtype=torch.float64)
    D = alphaedit_solve(P, prev.T @ prev, K, R, l2=1.0)
    assert (K0 @ D).abs().max() < 1e-6 * (K.double() @ D).abs().max()
    # with the lam C term too: still in the null space
    D = alphaedit_solve(P, prev.T @ prev, K, R, l2=1.0, C=K0.T @ K0 / 40, lam=100.0)
    assert (K0 @ D).abs().max() < 1e-6 * (K.double() @ D).abs().max()


def test_lam_weighs_the_energy_left_in_the_null_space():
    """On a leaky null space (preserved keys keep some energy there, as on SmolLM2's FFNs) the
    lam C term lowers the preserved keys' mean output change E|k D|^2 = tr(D^T C D), monotonically
    in lam, at the price of the edit keys' fit."""
    from editing.alphaedit import null_ridge

    g = torch.Generator().manual_seed(2)
    K0 = torch.randn(400, 96, generator=g, dtype=torch.float64) * torch.linspace(0.05, 3, 96, dtype=torch.float64)
    C = K0.T @ K0 / 400
    P, rank = null_space_projector(C, energy=0.05)
    assert 0 < rank < 96
    K, R = torch.randn(8, 96, generator=g), torch.randn(8, 16, generator=g)
    zero = torch.zeros(96, 96, dtype=torch.float64)
    leak, fit = [], []
    for lam in (0.0, 1.0, 10.0, 100.0):
        D = alphaedit_solve(P, zero, K, R, null_ridge(P, K, 0.1), C=C, lam=lam)
        leak.append(float(torch.trace(D.T @ C @ D)))
        fit.append(float((K.double() @ D - R.double()).norm()))
    assert all(a > b for a, b in zip(leak, leak[1:])), leak
    assert all(a < b for a, b in zip(fit, fit[1:])), fit
    with pytest.raises(WorkbenchError, match="needs the key statistics"):
        alphaedit_solve(P, zero, K, R, 0.1, lam=1.0)


@pytest.mark.parametrize("l2", [0.1, 1.0])
def test_ridge_shrinks_a_lone_edit_by_one_over_one_plus_l2(l2):
    """With the null-space ridge, k D = r / (1 + l2) for one key, whatever its null-space share."""
    from editing.alphaedit import null_ridge

    g = torch.Generator().manual_seed(1)
    K0 = torch.randn(60, 96, generator=g, dtype=torch.float64)
    C = K0.T @ K0 / 60 + 1e-3 * torch.eye(96, dtype=torch.float64)
    P, rank = null_space_projector(C, energy=1e-2)
    assert 0 < rank < 96
    k, r = torch.randn(1, 96, generator=g), torch.randn(1, 16, generator=g)
    D = alphaedit_solve(P, torch.zeros(96, 96, dtype=torch.float64), k, r, null_ridge(P, k, l2))
    torch.testing.assert_close(k.double() @ D, r.double() / (1 + l2), rtol=1e-8, atol=1e-10)


def test_alphaedit_state_collects_earlier_keys(tiny, stats0):
    state = AlphaEditState.from_stats({0: stats0})
    up = compute_alphaedit_update(tiny, [REQ], state, AlphaEditConfig(layers=(0,), **FAST))
    nxt = state.after(up)
    K = up.keys[0].double()
    torch.testing.assert_close(nxt.preserved[0], K.T @ K)
    assert nxt.batches == 1 and state.batches == 0


@pytest.mark.parametrize("reqs,exc,match", [
    ([], EditError, "batch is empty"),
    ([REQ, EditRequest(REQ.prompt, REQ.subject, "Paris")], EditError, "two targets"),
    ([EditRequest(REQ.prompt, REQ.subject, "\ud800")], TokenError, "cannot be produced"),
])
def test_bad_batches_raise_and_leave_weights(tiny, stats0, param_bytes, reqs, exc, match):
    before = param_bytes(tiny)
    with pytest.raises(exc, match=match):
        compute_memit_update(tiny, reqs, {0: stats0}, MemitConfig(layers=(0,), **FAST))
    with pytest.raises(exc, match=match):
        compute_alphaedit_update(tiny, reqs, AlphaEditState.from_stats({0: stats0}),
                                 AlphaEditConfig(layers=(0,), **FAST))
    assert param_bytes(tiny) == before


def test_missing_statistics_and_critical_layers(tiny, stats0):
    with pytest.raises(EditError, match="no key statistics for layer 0"):
        compute_memit_update(tiny, [REQ], {1: stats0}, MemitConfig(layers=(0,), **FAST))
    with pytest.raises(EditError, match="below the model's last layer"):
        compute_memit_update(tiny, [REQ], {0: stats0, 1: stats0}, MemitConfig(layers=(0, 1), **FAST))
    bad = KeyStats(0, torch.zeros(3, 3), 1, "", "")
    with pytest.raises(Exception, match=r"\(3, 3\)"):
        compute_memit_update(tiny, [REQ], {0: bad}, MemitConfig(layers=(0,), **FAST))
    assert critical_layers([0.0, 0.1, 0.5, 0.4, 0.0, 0.3], n=3) == (1, 2, 3)
