"""SAE feature browser on the tiny model with a random SAE: dashboard and steering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("workbench.saes")

from widgets import Controller  # noqa: E402
from widgets.sae_browser import FeatureBrowser  # noqa: E402
from workbench.saes import make_sae, splice, steer_feature  # noqa: E402

PROMPT = "Paris is the capital of"


def test_dashboard_and_steer(tiny, small_corpus_path):
    torch.manual_seed(0)
    sae = make_sae(architecture="topk", d_in=tiny.d_model, d_sae=32, k=4, site="resid_post:0")
    ctl = Controller(tiny, corpus=small_corpus_path)
    harvest = ctl.harvest(sae, max_tokens=1024, k=4)
    fb = FeatureBrowser(harvest, lambda f: ctl.feature_contexts(harvest, f),
                        lambda f: ctl.feature_vocab(sae, f),
                        lambda p, f, a: ctl.steer(sae, p, f, a), prompt=PROMPT, run_async=False)
    first = int(harvest.features[int(harvest.frequencies.argmax())])
    assert fb.feature_id == first and fb.reading.feature == first
    assert "<mark" in fb.examples.value
    # choosing another feature redraws the histogram and the vocabulary bars from its data
    other = int(harvest.frequencies.argsort(descending=True)[1])
    fb.feature.value = other
    np.testing.assert_allclose(np.array(fb.hist.data[0].y, dtype=float),
                               harvest.histograms[other].numpy())
    assert fb.reading.feature == int(harvest.features[other])
    assert list(fb.vocab_fig.data[0].y)[::-1] == [repr(t) for t in fb.reading.top_tokens]
    fb.amount.value = 20.0
    fb.run_steer()
    out = fb.steered
    with splice(tiny, sae, [steer_feature(fb.feature_id, 20.0)], keep_error=True):
        p = torch.softmax(tiny.last_logits(PROMPT)[0].float(), -1)
    assert out.top_after[0][1] == pytest.approx(float(p.max()), rel=1e-5)
    assert "Steering" in fb.steer_out.value
    assert "<mark" in fb.static_html(include_plotlyjs=False)
