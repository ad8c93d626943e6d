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
    """Per-layer lines for the numeric `columns` of `rows` (each row has a 'layer').

    Columns whose magnitudes differ (counts next to shares, say) get panels of their own: a
    column shares a panel only with columns whose largest |value| is within 10x of its own.
    """
    from plotly.subplots import make_subplots

    x = [r["layer"] for r in rows]
    scale = {c: max((abs(float(r[c])) for r in rows if r.get(c) is not None), default=0.0)
             for c in columns}
    panels: list[list[str]] = []
    for c in sorted(columns, key=lambda c: -scale[c]):
        for panel in panels:
            top = scale[panel[0]]
            if top == 0 and scale[c] == 0 or (scale[c] > 0 and top / scale[c] <= 10):
                panel.append(c)
                break
        else:
            panels.append([c])
    panels.sort(key=lambda pnl: min(columns.index(c) for c in pnl))
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for i, panel in enumerate(panels, start=1):
        for c in panel:
            fig.add_scatter(x=x, y=[r.get(c) for r in rows], name=c, mode="lines+markers", row=i, col=1)
        fig.update_yaxes(title_text=panel[0] if len(panel) == 1 else "", row=i, col=1)
    fig.update_xaxes(title_text="layer", row=len(panels), col=1)
    fig.update_layout(title=title, height=220 + 160 * len(panels), margin={"t": 40, "b": 40})
    return fig
