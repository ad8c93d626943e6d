"""Live view of an attribution graph: click nodes, group them, ablate or boost them in the model.

Click a node to pin it (its memory card shows below); pinned nodes can be named as a supernode
(a group that is selected together later), and scaled in the REAL model (attention and gates
free, unlike the graph's frozen model) with the prediction redrawn: ``ablate`` sets their
coefficients to 0, ``boost`` doubles them. The intervention runs through the controller
(`workbench.vocab.memory_intervention`) and is undone after each call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as W

from workbench.graphs import AttributionGraph
from workbench.memory_cards import MemoryCard
from workbench.vocab import DistributionChange

from ._base import View, figure_widget
from .html.graph import card_text, graph_figure, graph_summary_rows
from .html.report import escape

__all__ = ["GraphView"]


class GraphView(View):
    """Live view of an `AttributionGraph`.

    Args:
        graph: the graph. cards: node id -> `MemoryCard` for hover and the card panel.
        intervene: ``intervene(graph, node_ids, factor) -> DistributionChange`` (a controller
            method that scales those unit nodes in the real model).
    """

    title = "Attribution graph"

    def __init__(self, graph: AttributionGraph, cards: Mapping[str, MemoryCard],
                 intervene: Callable[[AttributionGraph, Sequence[str], float], DistributionChange],
                 run_async: bool = True):
        super().__init__(run_async)
        self.graph, self.cards, self._intervene = graph, dict(cards), intervene
        self.pinned: list[str] = []
        self.supernodes: dict[str, tuple[str, ...]] = {}
        self.change: DistributionChange | None = None
        self.fig = figure_widget(graph_figure(graph, self.cards))
        for tr in self.fig.data:
            if getattr(tr, "mode", "") == "markers":
                tr.on_click(self._on_click)
        self.card = W.HTML()
        self.pins = W.HTML()
        self.group_name = W.Text(placeholder="supernode name", layout=W.Layout(width="220px"))
        self.group_btn = W.Button(description="group pinned", icon="object-group")
        self.groups = W.Dropdown(options=[], description="supernode")
        self.ablate_btn = W.Button(description="ablate pinned", button_style="danger", icon="times")
        self.boost_btn = W.Button(description="boost pinned ×2", button_style="success", icon="plus")
        self.clear_btn = W.Button(description="clear", icon="eraser")
        self.result = W.HTML()
        self.group_btn.on_click(lambda _: self.group(self.group_name.value))
        self.groups.observe(lambda ch: self.select_group(ch["new"]) if ch["new"] else None, "value")
        self.ablate_btn.on_click(lambda _: self.scale(0.0))
        self.boost_btn.on_click(lambda _: self.scale(2.0))
        self.clear_btn.on_click(lambda _: self.set_pinned([]))
        s = graph_summary_rows(graph)[0]
        head = W.HTML(f"<b>{escape(graph.prompt)}</b> · {s.get('nodes')} nodes, {s.get('edges')} edges, "
                      f"completeness {s.get('completeness', float('nan')):.3f}")
        self.body = W.VBox([head, self.fig, W.HBox([self.ablate_btn, self.boost_btn, self.clear_btn]),
                            W.HBox([self.group_name, self.group_btn, self.groups]),
                            self.pins, self.result, self.card])
        self.body.add_class("wb-graph")

    # ------------------------------------------------------------------ selection
    def _on_click(self, trace, points, state) -> None:
        for i in points.point_inds:
            node_id = trace.customdata[i]
            self.toggle(str(node_id))

    def toggle(self, node_id: str) -> None:
        self.graph.node_index(node_id)   # KeyError names an unknown id
        pinned = [p for p in self.pinned if p != node_id]
        if len(pinned) == len(self.pinned):
            pinned.append(node_id)
        self.set_pinned(pinned)
        node = self.graph.nodes[self.graph.node_index(node_id)]
        self.card.value = f"<div class='wb-card'>{card_text(node, self.cards.get(node_id))}</div>"

    def set_pinned(self, node_ids: Sequence[str]) -> None:
        self.pinned = list(dict.fromkeys(node_ids))
        self.pins.value = ("pinned: " + ", ".join(f"<code>{escape(p)}</code>" for p in self.pinned)
                           if self.pinned else "<i>click nodes to pin them</i>")
        fresh = graph_figure(self.graph, self.cards, self.pinned)
        with self.fig.batch_update():
            for tr, new in zip(self.fig.data, fresh.data):
                if getattr(tr, "mode", "") == "markers":
                    tr.marker.line = new.marker.line

    def group(self, name: str) -> None:
        name = name.strip()
        if not name or not self.pinned:
            self.error.value = escape("name the supernode and pin its nodes first")
            return
        self.supernodes[name] = tuple(self.pinned)
        self.groups.options = list(self.supernodes)

    def select_group(self, name: str) -> None:
        self.set_pinned(self.supernodes[name])

    # ------------------------------------------------------------------ intervention
    def scale(self, factor: float) -> None:
        units = [p for p in self.pinned if p.startswith("u")]
        if not units:
            self.error.value = escape("pin at least one FFN unit (u…) node to scale")
            return
        self.submit(lambda progress: self._intervene(self.graph, units, factor), self._show,
                    f"scaling {len(units)} units ×{factor:g} in the model")

    def _show(self, change: DistributionChange) -> None:
        self.change = change
        rows = "".join(f"<tr><td>{escape(repr(b.token))}</td><td>{b.score:.3f}</td>"
                       f"<td>{escape(repr(a.token))}</td><td>{a.score:.3f}</td></tr>"
                       for b, a in zip(change.before[:5], change.after[:5]))
        self.result.value = (f"<p>{escape('; '.join(change.interventions))} · KL {change.kl:.4f}</p>"
                             f"<table><tr><th>before</th><th>p</th><th>after</th><th>p</th></tr>{rows}</table>")

    def static_parts(self):
        parts = [("figure", graph_figure(self.graph, self.cards, self.pinned)),
                 ("table", (graph_summary_rows(self.graph), None))]
        if self.change is not None:
            c = self.change
            parts.append(("text", f"{'; '.join(c.interventions)}: KL {c.kl:.4f}"))
            parts.append(("table", ([{"before": b.token, "p before": b.score, "after": a.token,
                                      "p after": a.score} for b, a in zip(c.before, c.after)], None)))
        return parts
