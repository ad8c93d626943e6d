"""Figure builders for the views this package owns: pure functions from results to plotly figures.

The same builder feeds a live FigureWidget (whose traces the view then updates in place) and a
static report, so the widget and the HTML show the same thing. Values are rounded to 4
significant digits to keep exported reports small.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from workbench.attention import AttentionResult
from workbench.prompt_lens import PromptLens

__all__ = ["lens_heatmap", "next_token_bars", "attention_heatmap", "head_norm_heatmap",
           "short", "round4"]


def short(tok: str, n: int = 10) -> str:
    """A token as a short visible label (spaces shown as ·, newlines as ⏎)."""
    t = tok.replace(" ", "·").replace("\n", "⏎")
    return t if len(t) <= n else t[: n - 1] + "…"


def round4(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(a == 0, 0, np.floor(np.log10(np.abs(np.where(a == 0, 1, a)))))
    scale = 10.0 ** (3 - mag)
    return np.round(a * scale) / scale


def _pos_axis(str_tokens) -> dict:
    return dict(tickmode="array", tickvals=list(range(len(str_tokens))),
                ticktext=[f"{short(t)}" for t in str_tokens], tickangle=-45)


def lens_heatmap(lens: PromptLens, selected: tuple[int, int] | None = None) -> go.Figure:
    """Tokens x layers: colour = probability of the lens's top-1 token, text = that token."""
    n_layers, n_pos = lens.top_probs.shape
    text = [[short(t, 8) for t in row] for row in lens.top_strs]
    fig = go.Figure(go.Heatmap(
        z=round4(lens.top_probs), x=list(range(n_pos)), y=list(range(n_layers)), text=text,
        texttemplate="%{text}", textfont={"size": 8}, colorscale="Blues", zmin=0, zmax=1,
        hovertemplate="layer %{y} · pos %{x}<br>top: %{text} (p=%{z:.3f})<extra></extra>",
        colorbar={"title": {"text": "p(top)"}, "len": 0.8}, name="lens",
    ))
    fig.update_layout(
        title=f"{lens.lens.capitalize()} lens: top token per layer and position (click a cell)",
        xaxis=dict(title="token", **_pos_axis(lens.str_tokens)), yaxis_title="layer",
        height=max(360, 14 * n_layers + 140), margin=dict(l=50, r=20, t=50, b=90),
    )
    sel = selected if selected is not None else (n_layers - 1, n_pos - 1)
    fig.add_trace(go.Scatter(x=[sel[1]], y=[sel[0]], mode="markers", name="selected",
                             marker=dict(symbol="square-open", size=14, color="#d62728",
                                         line=dict(width=2)), hoverinfo="skip", showlegend=False))
    return fig


def next_token_bars(lens: PromptLens) -> go.Figure:
    """Top-k next tokens: probability without edits (grey) and with them (blue)."""
    labels = [f"{i}:{short(t, 12)}" for i, t in enumerate(lens.next_strs)]
    fig = go.Figure([
        go.Bar(x=labels, y=round4(lens.base_next_probs), name="before edits", marker_color="#b8bfcc"),
        go.Bar(x=labels, y=round4(lens.next_probs), name="now", marker_color="#1f77b4"),
    ])
    title = f"Next token: {lens.prediction!r}"
    if lens.edits:
        title += f" ({len(lens.edits)} edit{'s' if len(lens.edits) > 1 else ''})"
    fig.update_layout(title=title, barmode="group", yaxis=dict(title="p", range=[0, 1]),
                      height=320, margin=dict(l=50, r=20, t=50, b=80),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def attention_heatmap(att: AttentionResult, layer_index: int, head: int) -> go.Figure:
    """One head's pattern: query rows attend to key columns (lower triangle)."""
    pat = att.patterns[layer_index, head]
    n = pat.shape[0]
    layer = att.layers[layer_index]
    fig = go.Figure(go.Heatmap(
        z=round4(pat), x=list(range(n)), y=list(range(n)), colorscale="Viridis", zmin=0, zmax=1,
        hovertemplate="query %{y} → key %{x}: %{z:.3f}<extra></extra>", name="pattern",
    ))
    fig.update_layout(title=f"Attention pattern, layer {layer} head {head}",
                      xaxis=dict(title="key", **_pos_axis(att.str_tokens)),
                      yaxis=dict(title="query", autorange="reversed", **_pos_axis(att.str_tokens)),
                      height=460, margin=dict(l=80, r=20, t=50, b=90))
    return fig


def head_norm_heatmap(att: AttentionResult, layer_index: int) -> go.Figure:
    """Size of each head's output ||z_h W_O[h]|| per token, for one layer."""
    norms = att.head_norms[layer_index]  # [pos head]
    layer = att.layers[layer_index]
    fig = go.Figure(go.Heatmap(
        z=round4(norms.T), x=list(range(norms.shape[0])), y=list(range(norms.shape[1])),
        colorscale="Oranges", hovertemplate="head %{y} · pos %{x}: %{z:.3g}<extra></extra>",
        name="head norms",
    ))
    fig.update_layout(title=f"Head output norms, layer {layer}",
                      xaxis=dict(title="token", **_pos_axis(att.str_tokens)), yaxis_title="head",
                      height=300, margin=dict(l=50, r=20, t=50, b=90))
    return fig
