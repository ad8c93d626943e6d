"""SAE feature browser: a feature's dashboard (top examples with the trigger token highlighted,
activation histogram, vocabulary view) and steering.

    fb = FeatureBrowser(harvest, contexts=lambda f: ctl.feature_contexts(harvest, f),
                        vocab=lambda f: ctl.feature_vocab(sae, f),
                        steer=lambda p, f, a: ctl.steer(sae, p, f, a), prompt="...",
                        lenses=ctl.lens_choices())

The lens dropdown (`lenses`, as in the prompt explorer) reads the decoder direction through the
chosen lens's linear part: ``vocab(feature, lens=KIND)`` for a lens other than logit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as W
import plotly.graph_objects as go

from workbench.saes.steering import SteerOutcome

from ._base import View, figure_widget, lens_picker, with_lens
from .html.report import escape
from .html.sae import examples_html, steer_html

__all__ = ["FeatureBrowser"]


def _hist(harvest, i: int) -> go.Figure:
    from .html.figures_sae import feature_histogram

    return feature_histogram(harvest.histograms[i].tolist(), harvest.edges.tolist(),
                             int(harvest.features[i]))


def _vocab(reading, kind: str = "logit") -> go.Figure:
    from .html.figures_sae import vocab_bar

    return vocab_bar(reading.top_tokens, reading.top_logits,
                     f"feature {reading.feature}: decoder direction promotes ({kind} lens)")


class FeatureBrowser(View):
    """Live dashboard of the features in a `FeatureHarvest`, most frequent first."""

    title = "SAE features"

    def __init__(self, harvest, contexts: Callable, vocab: Callable, steer: Callable,
                 prompt: str = "", run_async: bool = True,
                 lenses: Mapping[str, str | None] | None = None):
        super().__init__(run_async)
        self.harvest = harvest
        self.lens_pick, self.lens_note = lens_picker(lenses)
        self.lens_kind = "logit"
        self._contexts, self._vocab, self._steer = contexts, vocab, steer
        order = harvest.frequencies.argsort(descending=True).tolist()
        opts = [(f"{int(harvest.features[i])} (freq {float(harvest.frequencies[i]):.2%})", i)
                for i in order]
        self.feature = W.Dropdown(options=opts, value=order[0], description="feature")
        self.feature.add_class("wb-feature-select")
        self.examples = W.HTML()
        self.hist = figure_widget(_hist(harvest, order[0]))
        self.vocab_fig: go.FigureWidget | None = None
        self.vocab_box = W.VBox()
        self.prompt = W.Text(value=prompt, description="prompt", layout=W.Layout(width="60%"))
        self.amount = W.FloatSlider(value=8.0, min=-40.0, max=40.0, step=1.0, description="amount")
        self.steer_btn = W.Button(description="Steer", icon="compass", button_style="warning")
        self.steer_out = W.HTML()
        self.steered: SteerOutcome | None = None
        self.rows: list[dict] = []
        self.reading = None
        self.feature.observe(lambda _: self.show(self.feature.value), "value")
        self.lens_pick.observe(lambda change: self.set_lens(change["new"]), "value")
        self.steer_btn.on_click(lambda _: self.run_steer())
        self.body = W.VBox([W.HBox([self.feature, self.lens_pick, self.lens_note]),
                            W.HBox([self.hist, self.vocab_box]), self.examples,
                            W.HBox([self.prompt, self.amount, self.steer_btn]), self.steer_out])
        self.body.add_class("wb-sae-browser")
        self.show(order[0])

    @property
    def feature_id(self) -> int:
        return int(self.harvest.features[self.feature.value])

    def show(self, index: int) -> None:
        """Load the dashboard of harvested feature number `index`."""
        f, kind = int(self.harvest.features[index]), self.lens_pick.value
        self.submit(lambda progress: (self._contexts(f), with_lens(self._vocab, kind, f), kind),
                    lambda res: self._draw(index, *res), f"feature {f}")

    def set_lens(self, kind: str) -> None:
        """Read the decoder direction through lens `kind` (redraws the shown feature)."""
        if self.lens_pick.value != kind:
            self.lens_pick.value = kind          # observed: shows again
            return
        self.show(self.feature.value)

    def _draw(self, index: int, rows: list[dict], reading, kind: str = "logit") -> None:
        self.rows, self.reading, self.lens_kind = rows, reading, kind
        h = _hist(self.harvest, index)
        with self.hist.batch_update():
            self.hist.data[0].y = h.data[0].y
            self.hist.layout.title.text = h.layout.title.text
        v = _vocab(reading, kind)
        if self.vocab_fig is None:
            self.vocab_fig = figure_widget(v)
            self.vocab_box.children = [self.vocab_fig]
        else:
            with self.vocab_fig.batch_update():
                self.vocab_fig.data[0].x, self.vocab_fig.data[0].y = v.data[0].x, v.data[0].y
                self.vocab_fig.layout.title.text = v.layout.title.text
        freq = float(self.harvest.frequencies[index])
        self.examples.value = (f"<p><b>Feature {reading.feature}</b>: fires on {freq:.2%} of "
                               f"{self.harvest.n_tokens} tokens; suppresses "
                               f"{escape(', '.join(map(repr, reading.bottom_tokens[:5])))}</p>"
                               + examples_html(rows))

    def run_steer(self) -> None:
        p, f, a = self.prompt.value, self.feature_id, float(self.amount.value)
        self.submit(lambda progress: self._steer(p, f, a), self._show_steer, f"steering {f}")

    def _show_steer(self, out: SteerOutcome) -> None:
        self.steered = out
        self.steer_out.value = steer_html(out)

    def static_parts(self):
        parts = [("html", self.examples.value), ("figure", _hist(self.harvest, self.feature.value))]
        if self.reading is not None:
            parts.append(("figure", _vocab(self.reading, self.lens_kind)))
        if self.steered is not None:
            parts.append(("html", steer_html(self.steered)))
        return parts
