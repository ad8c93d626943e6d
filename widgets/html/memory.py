"""Figures and HTML of an FFN memory card: value tokens and trigger prefixes."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.memory_cards import MemoryCard

from .figures import round4
from .report import escape
from .tables import table_html

__all__ = ["value_bars", "examples_table"]


def value_bars(rec: MemoryCard) -> go.Figure:
    """Logits of the value's most promoted (left) and most suppressed (right) tokens."""
    fig = make_subplots(1, 2, subplot_titles=("promotes", "suppresses"), horizontal_spacing=0.2)
    fig.add_bar(y=[repr(t.token) for t in rec.promoted][::-1],
                x=round4([t.score for t in rec.promoted][::-1]),
                orientation="h", marker_color="#2ca02c", row=1, col=1, name="promotes")
    fig.add_bar(y=[repr(t.token) for t in rec.suppressed][::-1],
                x=round4([t.score for t in rec.suppressed][::-1]), orientation="h",
                marker_color="#d62728", row=1, col=2, name="suppresses")
    through = "" if rec.lens == "logit" else f" through the {rec.lens} lens"
    fig.update_layout(title=f"Value of layer {rec.layer} unit {rec.neuron} in the vocabulary{through} "
                            f"(‖v‖={rec.value_norm:.2f})", showlegend=False, height=300,
                      margin=dict(l=110, r=20, t=60, b=30))
    return fig


def examples_table(rec: MemoryCard) -> str:
    """The key's top trigger prefixes, headed by how often it fires (with harvest statistics)."""
    rows = [{"m": e.coefficient,
             "prefix (trigger highlighted) → next": (
                 f"{escape(e.prefix)}<mark class='tok'>{escape(e.trigger)}</mark>"
                 f" <span style='color:#6a7385'>→ {escape(e.next_token)}</span>")}
            for e in rec.triggers]
    fires = ("" if rec.frequency is None or rec.mean is None else
             f": fires (m&gt;0) on {rec.frequency:.2%} of {rec.n_tokens} tokens, mean m = {rec.mean:+.3f}")
    head = f"<p><b>Layer {rec.layer}, unit {rec.neuron}</b>{fires}</p>"
    return head + (table_html(rows, None, raw=("prefix (trigger highlighted) → next",))
                   if rows else "<i>no trigger prefixes in the index</i>")
