"""Memory explorer: pick an FFN layer and neuron, or search by a promoted token; see the key's
top trigger prefixes (trigger token highlighted), the value's promoted and suppressed tokens,
and how often the key fires. The lens dropdown (logit / tuned / jacobian, those `lenses` marks
drawable) reads the value through the chosen lens's linear part at its layer:
``show(layer, neuron, lens=KIND)`` for a lens other than logit.

    mx = MemoryExplorer(ctl.memory(index, 20, 5), show=lambda l, n: ctl.memory(index, l, n),
                        search=lambda t: ctl.search_memories(index, t), layers=index.layers,
                        d_mlp=s.d_mlp)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as W

from workbench.memory_cards import MemoryCard, MemoryHits

from ._base import View, figure_widget, lens_picker, with_lens
from .html.memory import examples_table, value_bars

__all__ = ["MemoryExplorer"]


class MemoryExplorer(View):
    """Live view of `MemoryCard`s, with a token search over `MemoryHits`."""

    title = "Memory explorer"

    def __init__(self, record: MemoryCard, show: Callable[..., MemoryCard],
                 search: Callable[[str], MemoryHits], layers: Sequence[int], d_mlp: int,
                 run_async: bool = True, lenses: Mapping[str, str | None] | None = None):
        super().__init__(run_async)
        self.record = record
        self.hits: MemoryHits | None = None
        self._show, self._search = show, search
        self.layer = W.Dropdown(options=list(layers), value=record.layer, description="layer")
        self.neuron = W.BoundedIntText(value=record.neuron, min=0, max=d_mlp - 1,
                                       description="neuron", layout=W.Layout(width="180px"))
        self.show_btn = W.Button(description="Show", icon="eye", button_style="primary")
        self.token = W.Text(description="promotes", placeholder=" Paris",
                            layout=W.Layout(width="220px"))
        self.search_btn = W.Button(description="Search", icon="search")
        self.lens_pick, self.lens_note = lens_picker(lenses, record.lens)
        self.lens_pick.observe(lambda change: self.select(self.layer.value, self.neuron.value), "value")
        self.hit_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.examples = W.HTML(examples_table(record))
        self.bars = figure_widget(value_bars(record))
        self.show_btn.on_click(lambda _: self.select(self.layer.value, self.neuron.value))
        self.search_btn.on_click(lambda _: self.search(self.token.value))
        self.body = W.VBox([W.HBox([self.layer, self.neuron, self.show_btn, self.token,
                                    self.search_btn, self.lens_pick]), self.lens_note, self.hit_box,
                            self.bars, self.examples])
        self.body.add_class("wb-memory-explorer")

    def select(self, layer: int, neuron: int) -> None:
        kind = self.lens_pick.value
        self.submit(lambda progress: with_lens(self._show, kind, int(layer), int(neuron)), self._draw,
                    f"memory L{layer} n{neuron} ({kind} lens)")

    def search(self, token: str) -> None:
        self.submit(lambda progress: self._search(token), self._draw_hits,
                    f"searching values that promote {token!r}")

    def _draw(self, rec: MemoryCard) -> None:
        self.record = rec
        self.layer.value, self.neuron.value = rec.layer, rec.neuron
        fresh = value_bars(rec)
        with self.bars.batch_update():
            for i in range(2):
                self.bars.data[i].x, self.bars.data[i].y = fresh.data[i].x, fresh.data[i].y
            self.bars.layout.title.text = fresh.layout.title.text
        self.examples.value = examples_table(rec)

    def _draw_hits(self, hits: MemoryHits) -> None:
        self.hits = hits
        buttons = []
        for layer, neuron, score in hits.hits:
            b = W.Button(description=f"L{layer} n{neuron} ({score:.1f})",
                         layout=W.Layout(width="auto"))
            b.on_click(lambda _, ly=layer, n=neuron: self.select(ly, n))
            buttons.append(b)
        self.hit_box.children = buttons

    def static_parts(self):
        parts = [("figure", value_bars(self.record)), ("html", examples_table(self.record))]
        if self.hits is not None:
            parts.append(("table", ([{"layer": ly, "neuron": n, "logit": v}
                                     for ly, n, v in self.hits.hits], None)))
        return parts
