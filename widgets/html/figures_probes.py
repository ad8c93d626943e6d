"""Plotly figure builders for probe battery results (pure: result dicts in, figures out).

They take the JSON-ready dicts a battery writes, so a cached result renders exactly like a
fresh one, in the HTML report and in a notebook alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

__all__ = ["linear_probe_figure", "selectivity_overview", "knowledge_curve_figure",
           "first_top1_figure", "layer_table_figure"]


def linear_probe_figure(result: dict, title: str | None = None) -> go.Figure:
    """Held-out accuracy, control accuracy, chance and selectivity of one probe by layer."""
    rows = result["layers"]
    x = [r["layer"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=x, y=[r["accuracy"] for r in rows], name="probe accuracy", mode="lines+markers")
    fig.add_scatter(x=x, y=[r["control_accuracy"] for r in rows], name="control task accuracy",
                    mode="lines+markers", line={"dash": "dot"})
    fig.add_scatter(x=x, y=[r["selectivity"] for r in rows], name="selectivity", mode="lines",
                    line={"width": 3})
    fig.add_scatter(x=x, y=[r["chance"] for r in rows], name="majority baseline", mode="lines",
                    line={"color": "grey", "dash": "dash"})
    fig.update_layout(title=title or f"{result['label']} at {result['site']}", height=340,
                      xaxis_title="layer", yaxis_title="held-out accuracy", yaxis_range=[0, 1.02],
                      margin={"t": 40, "b": 40})
    return fig


def selectivity_overview(named: Sequence[tuple[str, dict]]) -> go.Figure:
    """Heatmap of selectivity (probe minus control accuracy): probes by layer."""
    names = [n for n, _ in named]
    layers = sorted({r["layer"] for _, res in named for r in res["layers"]})
    z = []
    for _, res in named:
        by = {r["layer"]: r["selectivity"] for r in res["layers"]}
        z.append([by.get(layer) for layer in layers])
    fig = go.Figure(go.Heatmap(z=z, x=layers, y=names, colorscale="Viridis",
                               colorbar={"title": "selectivity"}))
    fig.update_layout(title="Selectivity by layer (accuracy - control accuracy)",
                      height=120 + 36 * len(names), xaxis_title="layer", margin={"t": 40, "b": 40})
    return fig


def knowledge_curve_figure(result: dict) -> go.Figure:
    """Mean logit-lens p(answer) and the share of facts with the answer top-1, by layer."""
    x = list(range(len(result["mean_p_curve"])))
    fig = go.Figure()
    fig.add_scatter(x=x, y=result["mean_p_curve"], name="mean p(answer)", mode="lines+markers")
    fig.add_scatter(x=x, y=result["top1_rate_curve"], name="share with answer top-1",
                    mode="lines+markers", line={"dash": "dot"})
    fig.update_layout(title="Logit lens on known facts", height=340, xaxis_title="layer (resid_post)",
                      yaxis_range=[0, 1.02], margin={"t": 40, "b": 40})
    return fig


def first_top1_figure(result: dict) -> go.Figure:
    """Histogram of the layer where each fact's answer first becomes logit-lens top-1."""
    hist = result["first_top1_hist"]
    fig = go.Figure(go.Bar(x=list(range(len(hist))), y=hist, name="facts"))
    fig.update_layout(title=f"First top-1 layer ({result['never_top1']} facts never top-1)",
                      height=300, xaxis_title="layer", yaxis_title="facts", margin={"t": 40, "b": 40})
    return fig


def layer_table_figure(rows: Sequence[dict], columns: Sequence[str], title: str) -> go.Figure:
    """Per-layer lines for the numeric `columns` of `rows` (each row has a 'layer')."""
    fig = go.Figure()
    x = [r["layer"] for r in rows]
    for c in columns:
        fig.add_scatter(x=x, y=[r.get(c) for r in rows], name=c, mode="lines+markers")
    fig.update_layout(title=title, height=320, xaxis_title="layer", margin={"t": 40, "b": 40})
    return fig
