"""The sparse TopK training step equals the dense one: loss, AuxK and every gradient."""

from __future__ import annotations

import pytest
import torch

from workbench.saes import SAEConfig, TrainConfig, train_sae
from workbench.saes.models import make_sae
from workbench.saes.topk_sparse import sparse_aux_loss, sparse_topk_step, use_sparse_step
from workbench.saes.train import aux_candidates, aux_loss


def _grads(sae):
    return {n: p.grad.detach().clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("n_dead", [0, 3, 5, 40])
def test_sparse_step_equals_dense(n_dead, gemm):
    """Both of the sparse step's forms (CPU: sparse products; CUDA's: dW_enc by a dense GEMM and
    AuxK decoded densely over the candidate columns) against the dense step."""
    torch.manual_seed(0)
    d_in, d_sae, k, aux_k, B = 24, 96, 6, 8, 50
    sae = make_sae(SAEConfig("topk", d_in, d_sae, k=k))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(B, d_in)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[torch.randperm(d_sae)[:n_dead]] = True

    out = sae(x)
    dense_mse = (out.recon - x).pow(2).sum(-1).mean()
    dense_aux = aux_loss(sae, x, out, dead, aux_k, n_dead)
    (dense_mse + 0.5 * dense_aux).backward()
    want = _grads(sae)
    sae.zero_grad(set_to_none=True)

    sp = sparse_topk_step(sae, x, dead, aux_k, n_dead, gemm=gemm)
    mse = (sp.recon - x).pow(2).sum(-1).mean()
    aux = sparse_aux_loss(x, sp)
    (mse + 0.5 * aux).backward()
    got = _grads(sae)

    torch.testing.assert_close(sp.recon, out.recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mse, dense_mse)
    torch.testing.assert_close(aux, dense_aux, rtol=1e-5, atol=1e-6)
    assert sp.idx.shape == (B, k) and sp.vals.shape == (B, k)
    assert torch.equal(sp.fired(d_sae), (out.codes > 0).any(0))
    assert sp.l0().item() == pytest.approx((out.codes > 0).float().sum(-1).mean().item())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sparse_choice_and_training_agree(tiny):
    """Auto choice: sparse on CPU (TopK only); a short training run gives the same SAE both ways."""
    from workbench.corpus import Corpus

    cfg = SAEConfig("topk", tiny.d_model, 4 * tiny.d_model, site="resid_post:1", k=4)
    assert use_sparse_step(make_sae(cfg), torch.device("cpu"), None)
    assert not use_sparse_step(make_sae(SAEConfig("relu", 8, 16, l1_coefficient=1.0)),
                               torch.device("cpu"), None)
    g = torch.Generator().manual_seed(0)
    corpus = Corpus("random", torch.randint(5, len(tiny.tokenizer), (6000,), generator=g), tiny.tokenizer)
    base = dict(total_tokens=1024, batch_size=128, window=32, tokens_per_forward=256, buffer_tokens=512,
                eval_tokens=0, warmup_steps=2, dead_after_tokens=256, aux_k=8)
    a = train_sae(tiny, corpus, cfg, TrainConfig(**base, sparse_step=True), progress=False)
    b = train_sae(tiny, corpus, cfg, TrainConfig(**base, sparse_step=False), progress=False)
    assert any(h["aux"] > 0 for h in b.history)  # AuxK ran (dead latents after 256 tokens)
    for (n, p), q in zip(a.sae.named_parameters(), b.sae.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=n)


COMPILED_CHECK = """
import torch
from workbench import Corpus
from workbench.saes import SAEConfig, TrainConfig, train_sae
from workbench.testing import tiny_session
s = tiny_session()
cfg = SAEConfig("topk", s.d_model, 4 * s.d_model, site="resid_post:1", k=4)
g = torch.Generator().manual_seed(0)
corpus = Corpus("random", torch.randint(5, len(s.tokenizer), (6000,), generator=g), s.tokenizer)
base = dict(total_tokens=1024, batch_size=128, window=32, tokens_per_forward=256, buffer_tokens=512,
            eval_tokens=0, warmup_steps=2, dead_after_tokens=256, aux_k=8, sparse_step=False)
b = train_sae(s, corpus, cfg, TrainConfig(**base), progress=False)
c = train_sae(s, corpus, cfg, TrainConfig(**base, compile_step=True), progress=False)
assert any(h["aux"] > 0 for h in c.history)
assert [h["dead"] for h in c.history] == [h["dead"] for h in b.history]
for (n, p), q in zip(b.sae.named_parameters(), c.sae.parameters(), strict=True):
    torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=n)
print("same")
"""


def test_compiled_step_trains_the_same_sae():
    """`TrainConfig(compile_step=True)` trains the SAE the eager dense step trains. Run in a
    fresh process without the suite's type-check hook: torch.compile would trace the hook's
    wrappers with fake tensors, whose checks it cannot evaluate."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_TYPECHECK"}
    got = subprocess.run([sys.executable, "-c", COMPILED_CHECK], env=env, capture_output=True,
                         text=True, timeout=600)
    assert got.returncode == 0 and got.stdout.strip().endswith("same"), got.stderr[-2000:]


@pytest.mark.parametrize("sparse", [False, True, "gemm"])
def test_auxk_on_candidate_columns_equals_all_columns(sparse):
    """AuxK restricted to `aux_candidates`' columns: same loss and gradients as over all
    latents, as long as the candidates hold every dead latent (they do, by construction)."""
    torch.manual_seed(1)
    d_in, d_sae, k, aux_k, B, batch, after = 16, 120, 4, 8, 40, 10, 300
    sae = make_sae(SAEConfig("topk", d_in, d_sae, k=k))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(B, d_in)
    since = torch.randint(0, 400, (d_sae,))
    cols = aux_candidates(since, after, 3 * batch)           # 3 steps ahead
    assert cols is not None and 0 < len(cols) < d_sae
    for ahead in range(3):                                    # each of the next steps' dead sets
        dead = since + ahead * batch >= after
        assert set(dead.nonzero().squeeze(1).tolist()) <= set(cols.tolist())
        n_dead = int(dead.sum())
        runs = []
        for c in (None, cols):
            sae.zero_grad(set_to_none=True)
            if sparse:
                sp = sparse_topk_step(sae, x, dead, aux_k, n_dead, cols=c, gemm=sparse == "gemm")
                loss = sparse_aux_loss(x, sp)
            else:
                loss = aux_loss(sae, x, sae(x), dead, aux_k, n_dead, c)
            loss.backward()
            runs.append((loss.detach(), _grads(sae)))
        assert runs[0][0].item() > 0
        torch.testing.assert_close(runs[1][0], runs[0][0])
        for name in runs[0][1]:
            torch.testing.assert_close(runs[1][1][name], runs[0][1][name], msg=name)
    assert aux_candidates(torch.full((d_sae,), 10**6), after, batch) is None  # all: no gather
