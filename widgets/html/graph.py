"""Attribution graphs drawn with plotly: layers bottom to top, positions left to right.

Nodes sit at (token position, layer): token embeddings on the bottom row, FFN units (memories)
at their layer, logits on the top row; several nodes of one cell spread sideways. In an ``sae``
graph the features and error nodes of the residual site after block L sit half a row above it
(at L + 0.5), between that block's FFN and the next. Edge width
grows with |weight| (four width classes), colour gives the sign (blue: raises the target,
red: lowers it). Hovering a unit shows its memory card (`workbench.graphs.memory_cards`): what
its value promotes and suppresses, its sub-update on this prompt, its top trigger prefixes when
a memory index was given. Same figure in the widget and in the standalone HTML (plotly.js is
inlined by `HtmlReport`, so the file opens offline).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from workbench.graphs import AttributionGraph, GraphNode
from workbench.memory_cards import MemoryCard

from .figures import short

__all__ = ["graph_figure", "node_positions", "card_text", "graph_summary_rows"]

COLORS = {"unit": "#ff7f0e", "feature": "#9467bd", "error": "#7f7f7f", "token": "#2ca02c",
          "logit": "#1f77b4"}


def node_positions(graph: AttributionGraph) -> list[tuple[float, float]]:
    """(x, y) per node: x = position (spread within a cell), y = layer (-1 tokens, L logits)."""
    cells: dict[tuple[float, int], list[int]] = {}
    for i, n in enumerate(graph.nodes):
        cells.setdefault((_row(graph, n), n.pos), []).append(i)
    xy: list[tuple[float, float]] = [(0.0, 0.0)] * len(graph.nodes)
    n_pos = max(len(graph.tokens), 1)
    for (layer, pos), idx in cells.items():
        k = len(idx)
        logits = all(graph.nodes[i].kind == "logit" for i in idx)
        # a cell's nodes spread over up to 0.9 of a position; the logit row over up to 3 positions
        width = min(3.0, 0.3 * k, float(n_pos)) if logits else min(0.9, 0.06 * k)
        for j, i in enumerate(idx):
            off = 0.0 if k == 1 else (j / (k - 1) - (1.0 if logits else 0.5)) * width
            xy[i] = (pos + off, float(layer))
    return xy


def _row(graph: AttributionGraph, n: GraphNode) -> float:
    """The drawing row: the layer, half a row up for an sae graph's residual-site nodes."""
    site = graph.basis == "sae" and (n.kind == "feature" or (n.kind == "error" and n.id.startswith("r")))
    return n.layer + 0.5 if site else float(n.layer)


def card_text(node: GraphNode, card: MemoryCard | None) -> str:
    """Hover text of a node: its label and values, and for a unit its memory card."""
    lines = [f"<b>{html.escape(node.label)}</b>", f"{node.kind} · layer {node.layer} · position {node.pos}",
             f"activation {node.activation:+.3g} · influence {node.influence:.3g}"]
    if card is not None:
        lines.append("value promotes: " + html.escape(", ".join(repr(t.token) for t in card.promoted[:6])))
        lines.append("value suppresses: " + html.escape(", ".join(repr(t.token) for t in card.suppressed[:6])))
        if card.sub_update:
            lines.append("m v on this prompt → " + html.escape(", ".join(repr(t.token) for t in card.sub_update[:6])))
        for ex in card.triggers[:3]:
            lines.append(f"trigger m={ex.coefficient:.2f}: …{html.escape(short(ex.prefix, 40))}"
                         f"[{html.escape(ex.trigger)}]")
    return "<br>".join(lines)


def graph_figure(graph: AttributionGraph, cards: Mapping[str, MemoryCard] | None = None,
                 selected: Sequence[str] = (), height: int | None = None) -> go.Figure:
    """The graph as one plotly figure (edges as lines, nodes as markers with hover cards)."""
    xy = node_positions(graph)
    fig = go.Figure()
    w = graph.weights.abs()
    wmax = float(w.max()) if len(w) else 1.0
    groups: dict[tuple[int, bool], tuple[list, list]] = {}
    for (s, t), wt in zip(graph.edges.tolist(), graph.weights.tolist()):
        cls = min(3, int(4 * abs(wt) / wmax)) if wmax > 0 else 0
        xs, ys = groups.setdefault((cls, wt >= 0), ([], []))
        xs += [xy[s][0], xy[t][0], None]
        ys += [xy[s][1], xy[t][1], None]
    for (cls, pos), (xs, ys) in sorted(groups.items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=0.6 + 1.6 * cls,
                                           color="rgba(31,119,180,%.2f)" % (0.25 + 0.2 * cls) if pos
                                           else "rgba(214,39,40,%.2f)" % (0.25 + 0.2 * cls))))
    cards = cards or {}
    sel = set(selected)
    for kind in ("token", "unit", "feature", "error", "logit"):
        idx = [i for i, n in enumerate(graph.nodes) if n.kind == kind]
        if not idx:
            continue
        infl = [graph.nodes[i].influence for i in idx]
        top = max((abs(v) for v in infl if math.isfinite(v)), default=1.0) or 1.0
        fig.add_trace(go.Scatter(
            x=[xy[i][0] for i in idx], y=[xy[i][1] for i in idx], mode="markers", name=kind,
            customdata=[graph.nodes[i].id for i in idx],
            text=[card_text(graph.nodes[i], cards.get(graph.nodes[i].id)) for i in idx],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(size=[8 + 14 * (abs(v) / top if math.isfinite(v) else 0) for v in infl],
                        color=COLORS[kind],
                        line=dict(width=[3 if graph.nodes[i].id in sel else 0.5 for i in idx],
                                  color=["#000" if graph.nodes[i].id in sel else "#fff" for i in idx]))))
    n_layers = max((n.layer for n in graph.nodes if n.kind == "logit"), default=1)
    fig.update_layout(
        title=f"Attribution graph ({graph.basis}): {short(graph.prompt, 60)!r}"
              + (f" → {graph.target!r}" if graph.target else ""),
        xaxis=dict(tickvals=list(range(len(graph.tokens))), ticktext=[short(t, 10) for t in graph.tokens],
                   title="position", zeroline=False),
        yaxis=dict(title="layer (tokens at the bottom, logits on top)", range=[-1.6, n_layers + 0.6],
                   tickvals=[-1, *range(0, n_layers, max(1, n_layers // 10)), n_layers],
                   ticktext=["emb", *map(str, range(0, n_layers, max(1, n_layers // 10))), "logits"]),
        height=height or 560, margin=dict(l=60, r=20, t=60, b=60), hovermode="closest",
        legend=dict(orientation="h", y=1.06, x=1, xanchor="right"), dragmode="select",
    )
    return fig


def graph_summary_rows(graph: AttributionGraph) -> list[dict[str, Any]]:
    """The summary as a one-row table (the keys graph.json's `summary` holds)."""
    return [{k: v for k, v in graph.summary.items() if isinstance(v, (int, float, str)) or v is None}]
