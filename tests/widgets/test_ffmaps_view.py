"""FF-maps view on the tiny model: the layer slider redraws the maps of that layer, a cell click
shows that pair's contributions per component, a new prompt recomputes through the callback."""

from __future__ import annotations

import numpy as np
import pytest
from plotly.callbacks import InputDeviceState, Points

from widgets import FFMapsView
from widgets._ffmaps_ctl import FFMapsMixin

PROMPT = "Paris is the capital of France and"


@pytest.fixture
def view(tiny):
    ctl = FFMapsMixin(tiny)
    return FFMapsView(ctl.ffmaps(PROMPT, steps=8), ctl.ffmaps, run_async=False)


def _z(trace) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in trace.z], dtype=float)


def test_slider_click_and_prompt(view):
    r = view.result
    assert list(view.layer.options) == [0, 1] and len(view.maps.data) == len(r.layers[0].scopes)
    view.layer.value = 1
    shares = r.layer(1).shares.numpy()
    for s, trace in enumerate(view.maps.data):          # each panel is that layer's scope map
        z = _z(trace)
        low = np.tril(np.ones_like(z, dtype=bool))
        np.testing.assert_allclose(z[low], shares[s][low], rtol=1e-3, atol=1e-6)
        assert np.isnan(z[~low]).all()
    assert "layer 1" in view.stats.value
    # a click on cell (query 5, source 2) of the FF panel
    ff = r.layer(1).ff_scope
    view.maps.data[ff]._dispatch_on_click(Points(point_inds=[(5, 2)], xs=[2], ys=[5], trace_name="",
                                                 trace_index=ff), InputDeviceState())
    assert view.cell == (5, 2)
    np.testing.assert_allclose(view.pair.data[0].y, r.layer(1).maps[:, 5, 2].numpy(), rtol=1e-6)
    np.testing.assert_allclose(view.pair.data[1].y, r.layer(1).head_maps[:, 5, 2].numpy(), rtol=1e-6)
    assert "query 5" in view.pair.layout.title.text and "source 2" in view.pair.layout.title.text
    view.select_cell(2, 5)                               # above the diagonal: refused, state kept
    assert view.cell == (5, 2) and "outside the causal map" in view.error.value
    view.set_prompt("Hello there, world")
    assert view.result.prompt == "Hello there, world"
    n = len(view.result.str_tokens)
    assert _z(view.maps.data[0]).shape == (n, n) and view.cell[0] < n
    assert "<table" in view.static_html(include_plotlyjs=False)


def test_renderers(view, tiny, small_corpus_path, tmp_path):
    from widgets.html.render import export_html
    from workbench.corpus import Corpus
    from workbench.lenses import lens_kl

    kl = lens_kl(tiny, Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=256), ["logit"],
                 max_tokens=64, window=32)
    assert kl.kl["logit"][-1] == pytest.approx(0.0, abs=1e-5)   # the last layer's lens is the output
    text = export_html([view.result, kl], tmp_path / "r.html").read_text()
    assert "FF blocks through attention maps" in text and "sliders" in text
    assert "KL to the final distribution" in text

