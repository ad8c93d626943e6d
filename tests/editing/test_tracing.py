"""Causal tracing: batched equals the per-cell loop, identities, and the real model's FFN peak."""

from __future__ import annotations

import pytest
import torch

from editing import TraceConfig, trace_fact
from editing.tracing import ffn_peak_layer, subject_last_curve
from workbench.errors import WorkbenchError

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"


def test_batched_equals_one_pass_per_cell(tiny):
    cfg = TraceConfig(kinds=("resid", "mlp"), samples=2, window=2)
    a = trace_fact(tiny, PROMPT, SUBJECT, 0.5, config=cfg)
    b = trace_fact(tiny, PROMPT, SUBJECT, 0.5, config=TraceConfig(**{**cfg.to_dict(), "rows_per_batch": 2}))
    for k in cfg.kinds:
        assert a.scores[k].shape == (tiny.n_layers, len(a.str_tokens))
        torch.testing.assert_close(a.scores[k], b.scores[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "attn", "resid"])
def test_subject_last_curve_is_the_full_trace_column(tiny, tiny_gemma, kind):
    """The one-column trace (edit-layer choice) equals that column of the full grid."""
    for s in (tiny, tiny_gemma):
        cfg = TraceConfig(kinds=(kind,), samples=2, window=3)
        full = trace_fact(s, PROMPT, SUBJECT, 0.5, config=cfg).subject_last_curve(kind)
        col = subject_last_curve(s, PROMPT, SUBJECT, 0.5, kind, config=cfg)
        assert col.shape == (s.n_layers,)
        torch.testing.assert_close(col, full, atol=1e-6, rtol=1e-4)
    with pytest.raises(WorkbenchError, match="kind='mlpp'"):
        subject_last_curve(tiny, PROMPT, SUBJECT, 0.5, "mlpp")


def test_identities(tiny):
    r = trace_fact(tiny, PROMPT, SUBJECT, 0.5, config=TraceConfig(kinds=("resid",), samples=2))
    # restoring the whole last-token state of the last layer gives back the clean prediction
    assert r.scores["resid"][-1, -1].item() == pytest.approx(r.clean_prob, rel=1e-4, abs=1e-6)
    assert r.subject_span == (0, len(tiny.encode(SUBJECT)))
    zero = trace_fact(tiny, PROMPT, SUBJECT, 0.5, config=TraceConfig(kinds=("mlp",), samples=1,
                                                                       noise_scale=0.0))
    assert zero.corrupted_prob == pytest.approx(zero.clean_prob, rel=1e-5)
    assert torch.allclose(zero.indirect_effect("mlp"), torch.zeros(()), atol=1e-5)


def test_gemma_trace_runs(tiny_gemma):
    r = trace_fact(tiny_gemma, PROMPT, SUBJECT, 0.5, config=TraceConfig(samples=1, window=1))
    assert set(r.scores) == {"resid", "mlp", "attn"}
    assert r.subject_span[0] == 1                       # after BOS


def test_bad_config():
    with pytest.raises(WorkbenchError, match="kinds"):
        TraceConfig(kinds=("mlpp",))
    with pytest.raises(WorkbenchError, match="samples"):
        TraceConfig(samples=0)


@pytest.mark.real
def test_real_ffn_curve_peaks_mid_network(smollm, small_corpus_path):
    """The FFN (window) indirect effect at the subject's last token peaks in the middle layers."""
    from editing import embedding_std
    from workbench.corpus import Corpus

    sigma = embedding_std(smollm, Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=8000))
    facts = [("Vinson Massif is located in the continent of", "Vinson Massif")]
    layer, curve = ffn_peak_layer(smollm, facts, sigma, TraceConfig(kinds=("mlp",), samples=2))
    L = smollm.n_layers
    assert L // 8 <= layer <= L - L // 4, (layer, curve)
    assert curve[layer] > 2 * max(curve[-3:])              # the last layers carry little
