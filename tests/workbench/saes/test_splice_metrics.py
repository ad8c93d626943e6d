"""Splicing and metrics: identity SAE recovers 100% of the loss, zero SAE 0%, hooks removed."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import NonFiniteError
from workbench.saes import (
    FeatureOutOfRange,
    SAEConfig,
    ablate_feature,
    make_sae,
    reconstruction_metrics,
    splice,
    splice_metrics,
    steer_feature,
)

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]


def _tokens(s):
    return [s.tokenize(PROMPTS).tokens[:, :8]]


@pytest.mark.parametrize("skip_first", [False, True])
def test_identity_recovers_all_zero_recovers_none(tiny, make_identity, skip_first):
    ident = make_identity(tiny.d_model, site="resid_post:0", skip_first=skip_first)
    m = splice_metrics(tiny, ident, _tokens(tiny))
    assert m.ce_sae == pytest.approx(m.ce_clean, abs=1e-6)
    assert m.loss_recovered == pytest.approx(1.0, abs=1e-6)
    assert m.ce_zero != pytest.approx(m.ce_clean, abs=1e-3)
    zero = make_sae(SAEConfig("relu", tiny.d_model, 8, site="resid_post:0",
                              skip_first_position=skip_first))
    with torch.no_grad():
        zero.W_dec.zero_()
    mz = splice_metrics(tiny, zero, _tokens(tiny))
    assert mz.loss_recovered == pytest.approx(0.0, abs=1e-6)


def test_splice_restores_model_also_after_exception(tiny):
    sae = make_sae(SAEConfig("topk", tiny.d_model, 32, k=4, site="resid_post:0"))
    before = tiny.logits(PROMPTS)
    with splice(tiny, sae):
        during = tiny.logits(PROMPTS)
    assert not torch.allclose(during, before)
    assert torch.equal(tiny.logits(PROMPTS), before)
    with pytest.raises(RuntimeError, match="boom"):
        with splice(tiny, sae):
            raise RuntimeError("boom")
    assert torch.equal(tiny.logits(PROMPTS), before)


def test_keep_error_is_identity_and_edits_move_by_decoder_row(tiny):
    sae = make_sae(SAEConfig("relu", tiny.d_model, 32, site="resid_post:1",
                             skip_first_position=False))
    from workbench import capture

    clean = capture(tiny, PROMPTS, ["resid_post:1"])["resid_post:1"]
    with splice(tiny, sae, keep_error=True):
        same = capture(tiny, PROMPTS, ["resid_post:1"])["resid_post:1"]
    assert torch.allclose(same, clean, atol=1e-4)
    # steering adds amount * d_i exactly (the hook output is what resid_post:1 captures)
    with splice(tiny, sae, edits=[steer_feature(3, 2.0)], keep_error=True):
        steered = capture(tiny, PROMPTS, ["resid_post:1"])["resid_post:1"]
    assert torch.allclose(steered - clean, 2.0 * sae.W_dec[3].expand_as(clean), atol=1e-4)
    with pytest.raises(FeatureOutOfRange, match="feature=99"):
        with splice(tiny, sae, edits=[ablate_feature(99)]):
            pass


def test_reconstruction_metrics_against_direct(make_identity):
    sae = make_sae(SAEConfig("topk", 16, 64, k=3))
    x = torch.randn(300, 16) * 2 + 1
    m = reconstruction_metrics(sae, x, batch_size=128)
    out = sae(x)
    assert m.l0 == pytest.approx((out.codes > 0).sum(-1).float().mean().item(), rel=1e-5)
    fvu = ((out.recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m.fvu == pytest.approx(fvu.item(), rel=1e-4)
    assert m.dead == int(((out.codes > 0).sum(0) == 0).sum())
    assert reconstruction_metrics(make_identity(16), x).fvu == 0.0
    x[5, 2] = float("nan")
    with pytest.raises(NonFiniteError):
        reconstruction_metrics(sae, x)
