"""FF-maps view: the contextualisation maps after each component of one layer side by side, a
layer slider, and one (query, source) cell's contributions per component on click.

    view = FFMapsView(ctl.ffmaps(prompt), recompute=ctl.ffmaps)

Moving the slider or clicking a cell redraws from the `FFMaps` in hand (no model call); a new
prompt calls `recompute(prompt, layers, steps=..., progress=...)` in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W

from workbench.ffmaps import FFMaps

from ._base import View, figure_widget
from .html.ffmaps import ff_change_figure, layer_rows, maps_figure, pair_figure, pairs_rows
from .html.report import escape

__all__ = ["FFMapsView"]


class FFMapsView(View):
    """Live view of an `FFMaps` result."""

    title = "FF blocks through attention maps"

    def __init__(self, result: FFMaps, recompute: Callable[..., FFMaps] | None = None,
                 layer: int | None = None, run_async: bool = True):
        super().__init__(run_async)
        self.result = result
        self._recompute = recompute
        layers = [lm.layer for lm in result.layers]
        self.prompt_box = W.Text(value=result.prompt, description="prompt", layout=W.Layout(width="70%"))
        self.run_btn = W.Button(description="Run", button_style="primary", icon="play",
                                disabled=recompute is None)
        self.layer = W.SelectionSlider(options=layers, value=layers[0] if layer is None else layer,
                                       description="layer", continuous_update=False)
        self.layer.add_class("wb-ffmaps-layer")
        self.cell = self._default_cell()
        self.maps = figure_widget(maps_figure(result, self.layer.value))
        self.pair = figure_widget(pair_figure(result, self.layer.value, *self.cell))
        self.stats = W.HTML()
        self._hook_clicks()
        self.layer.observe(lambda _: self._redraw(), "value")
        self.run_btn.on_click(lambda _: self.set_prompt(self.prompt_box.value))
        self.body = W.VBox([W.HBox([self.prompt_box, self.run_btn]), self.layer, self.stats,
                            self.maps, self.pair])
        self.body.add_class("wb-ffmaps")
        self._write_stats()

    # ---------------------------------------------------------------- state
    def _default_cell(self) -> tuple[int, int]:
        """The layer's most amplified pair when one is listed, else the last query and its previous token."""
        for p in self.result.pairs:
            if p.layer == self.layer.value:
                return p.i, p.j
        n = len(self.result.str_tokens)
        return n - 1, max(0, n - 2)

    def _hook_clicks(self) -> None:
        for trace in self.maps.data:
            trace.on_click(self._on_click)

    def _on_click(self, trace, points, state) -> None:
        if points.point_inds:
            i, j = points.point_inds[0]
            self.select_cell(int(i), int(j))

    def select_cell(self, i: int, j: int) -> None:
        """Show query i's contributions from source j (what a click on cell (i, j) does)."""
        n = len(self.result.str_tokens)
        if not 0 <= j <= i < n:
            self.error.value = escape(f"cell (i={i}, j={j}) is outside the causal map of {n} tokens (j <= i)")
            return
        self.error.value = ""
        self.cell = (i, j)
        self._draw_pair()

    def _draw_pair(self) -> None:
        fresh = pair_figure(self.result, self.layer.value, *self.cell)
        with self.pair.batch_update():
            for t, f in zip(self.pair.data, fresh.data):
                t.x, t.y = f.x, f.y
                if f.customdata is not None:
                    t.customdata = f.customdata
            self.pair.layout.title.text = fresh.layout.title.text

    def _write_stats(self) -> None:
        lm = self.result.layer(self.layer.value)
        self.stats.value = escape(
            f"layer {lm.layer}: FF re-ranking 1-ρ = {1 - lm.ff_rho:.3f}, change {lm.ff_change:.3f}, "
            f"cancellation ρ = {lm.cancel_rho:.3f}, retained {lm.ff_retained:.2f}; "
            f"max relative error {max(lm.errors):.1e}")

    def _redraw(self, full: bool = False) -> None:
        fresh = maps_figure(self.result, self.layer.value)
        if full or len(fresh.data) != len(self.maps.data):
            old, self.maps = self.maps, figure_widget(fresh)     # new tokens: new axes
            self.body.children = tuple(self.maps if c is old else c for c in self.body.children)
            self._hook_clicks()
        else:
            with self.maps.batch_update():
                for t, f in zip(self.maps.data, fresh.data):
                    t.z, t.x, t.y, t.name = f.z, f.x, f.y, f.name
                    t.hovertemplate = f.hovertemplate
                self.maps.layout.title.text = fresh.layout.title.text
        n = len(self.result.str_tokens)
        if full or not 0 <= self.cell[1] <= self.cell[0] < n:
            self.cell = self._default_cell()
        self._draw_pair()
        self._write_stats()

    # ---------------------------------------------------------------- recompute
    def set_prompt(self, prompt: str, steps: int | None = None) -> None:
        recompute = self._recompute
        if recompute is None:
            self.error.value = escape("this view was made without a recompute callback")
            return
        layers = [lm.layer for lm in self.result.layers]
        steps = self.result.steps if steps is None else steps
        self.submit(lambda progress: recompute(prompt, layers, steps=steps, progress=progress),
                    self._new_result, "decomposing layers")

    def _new_result(self, result: FFMaps) -> None:
        self.result = result
        layers = [lm.layer for lm in result.layers]
        if list(self.layer.options) != layers:
            self.layer.options = layers
        self._redraw(full=True)

    # ---------------------------------------------------------------- static
    def static_parts(self):
        r, layer = self.result, self.layer.value
        return [("text", f"Prompt: {r.prompt!r}; maps after each component of layer {layer}"),
                ("figure", maps_figure(r, layer)),
                ("figure", pair_figure(r, layer, *self.cell)),
                ("figure", ff_change_figure(r)),
                ("table", (layer_rows(r), None)),
                ("table", (pairs_rows(r), None))]
