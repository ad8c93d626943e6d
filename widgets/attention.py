"""Attention view: one head's pattern and every head's output size per token, by layer.

    view = AttentionView(ctl.attention(prompt), recompute=ctl.attention)

Changing layer or head redraws from the result in hand; a new prompt calls `recompute(prompt)`.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W

from workbench.attention import AttentionResult

from ._base import View, figure_widget
from .html.figures import attention_heatmap, head_norm_heatmap, round4

__all__ = ["AttentionView"]


class AttentionView(View):
    """Live view of an `AttentionResult`."""

    title = "Attention"

    def __init__(self, result: AttentionResult, recompute: Callable[..., AttentionResult],
                 layer: int | None = None, head: int = 0, run_async: bool = True):
        super().__init__(run_async)
        self.result = result
        self._recompute = recompute
        li = result.layers.index(layer) if layer is not None else 0
        self.prompt_box = W.Text(value=result.prompt, description="prompt",
                                 layout=W.Layout(width="70%"))
        self.run_btn = W.Button(description="Run", button_style="primary", icon="play")
        self.layer = W.Dropdown(options=[(str(ly), i) for i, ly in enumerate(result.layers)],
                                value=li, description="layer")
        self.head = W.IntSlider(value=head, min=0, max=result.n_heads - 1, description="head")
        self.head.add_class("wb-head-slider")
        self.pattern = figure_widget(attention_heatmap(result, li, head))
        self.norms = figure_widget(head_norm_heatmap(result, li))
        self.norms.data[0].on_click(self._on_norm_click)
        self.layer.observe(lambda _: self._redraw(), "value")
        self.head.observe(lambda _: self._redraw(), "value")
        self.run_btn.on_click(lambda _: self.set_prompt(self.prompt_box.value))
        self.body = W.VBox([W.HBox([self.prompt_box, self.run_btn]),
                            W.HBox([self.layer, self.head]), self.pattern, self.norms])
        self.body.add_class("wb-attention")

    def set_prompt(self, prompt: str) -> None:
        layers = self.result.layers
        self.submit(lambda progress: self._recompute(prompt, layers, progress=progress),
                    self._new_result, "capturing attention")

    def _new_result(self, result: AttentionResult) -> None:
        self.result = result
        self._redraw(full=True)

    def _on_norm_click(self, trace, points, state) -> None:
        if points.point_inds:
            self.head.value = int(points.point_inds[0][0])

    def _redraw(self, full: bool = False) -> None:
        li, h = self.layer.value, self.head.value
        pat = attention_heatmap(self.result, li, h)
        nrm = head_norm_heatmap(self.result, li)
        for fw, fresh in ((self.pattern, pat), (self.norms, nrm)):
            with fw.batch_update():
                if full:
                    fw.layout = fresh.layout
                    fw.data[0].x, fw.data[0].y = fresh.data[0].x, fresh.data[0].y
                fw.data[0].z = fresh.data[0].z
                fw.layout.title.text = fresh.layout.title.text

    def static_parts(self):
        r, li = self.result, self.layer.value
        rows = [{"layer": r.layers[li], "head": h,
                 "max norm": float(round4(r.head_norms[li, :, h].max())),
                 "mean norm": float(round4(r.head_norms[li, :, h].mean()))}
                for h in range(r.n_heads)]
        return [("text", f"Prompt: {r.prompt!r}"),
                ("figure", attention_heatmap(r, li, self.head.value)),
                ("figure", head_norm_heatmap(r, li)),
                ("table", (rows, None))]
