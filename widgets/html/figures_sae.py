"""Plotly figure builders for SAE results (pure: result objects in, figures out)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

__all__ = ["training_curves", "feature_histogram", "frequency_histogram", "vocab_bar",
           "head_scores_heatmap", "attribution_bar"]


def training_curves(history: Sequence[dict]) -> go.Figure:
    """FVU and L0 against training tokens (from `TrainResult.history`)."""
    t = [h["tokens"] for h in history]
    fig = go.Figure()
    fig.add_scatter(x=t, y=[h["fvu"] for h in history], name="FVU (batch)")
    fig.add_scatter(x=t, y=[h["l0"] for h in history], name="L0", yaxis="y2")
    fig.update_layout(title="SAE training", xaxis_title="tokens", yaxis_title="FVU",
                      yaxis2={"title": "L0", "overlaying": "y", "side": "right"}, height=320)
    return fig


def feature_histogram(counts: Sequence[float], edges: Sequence[float], feature: int) -> go.Figure:
    """Histogram of log10 activation of one feature (nonzero activations only)."""
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centers, y=list(counts)))
    fig.update_layout(title=f"feature {feature}: activation histogram", height=220,
                      xaxis_title="log10 activation", yaxis_title="tokens",
                      margin={"t": 40, "b": 40})
    return fig


def frequency_histogram(frequencies: Sequence[float]) -> go.Figure:
    """log10 firing frequency of every latent (dead latents at the left edge)."""
    import math

    vals = [math.log10(f) if f > 0 else -8 for f in frequencies]
    fig = go.Figure(go.Histogram(x=vals, nbinsx=60))
    fig.update_layout(title="latent firing frequency (dead = -8)", xaxis_title="log10 frequency",
                      yaxis_title="latents", height=280)
    return fig


def vocab_bar(tokens: Sequence[str], logits: Sequence[float], title: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(logits)[::-1], y=[repr(t) for t in tokens][::-1], orientation="h"))
    fig.update_layout(title=title, height=260, margin={"l": 120, "t": 40})
    return fig


def head_scores_heatmap(scores, importance, title: str = "heads") -> go.Figure:
    """Two heatmaps [layer head]: SAE code uniqueness score and patching importance."""
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("SAE code score", "patching importance"))
    fig.add_heatmap(z=[list(map(float, r)) for r in scores], colorscale="Viridis", showscale=False,
                    row=1, col=1)
    fig.add_heatmap(z=[list(map(float, r)) for r in importance], colorscale="RdBu", zmid=0,
                    row=1, col=2)
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer")
    fig.update_layout(title=title, height=420)
    return fig


def attribution_bar(effects) -> go.Figure:
    """Attribution (and real patching where known) of the top features."""
    labels = [f"{e.site}#{e.feature}" for e in effects]
    fig = go.Figure(go.Bar(x=labels, y=[e.attribution for e in effects], name="attribution"))
    if any(e.real is not None for e in effects):
        fig.add_bar(x=labels, y=[e.real if e.real is not None else 0 for e in effects], name="real")
    fig.update_layout(title="feature effects on the metric", height=320, barmode="group")
    return fig
