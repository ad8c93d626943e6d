"""Plotly figures for causal traces and edits (pure functions: results in, figures out)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["trace_heatmap", "trace_figures", "edit_summary_figure", "lens_figure"]

_TITLES = {"resid": "single restored layer (residual stream)", "mlp": "restored FFN (window)",
           "attn": "restored attention (window)"}
_SCALES = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}


def trace_heatmap(result, kind: str):
    """Heatmap of p(answer) with one state restored: tokens down, layers across (ROME's layout)."""
    import plotly.graph_objects as go

    z = result.scores[kind].T.tolist()                          # [pos layer]
    labels = [f"{t}*" if result.subject_span[0] <= i < result.subject_span[1] else t
              for i, t in enumerate(result.str_tokens)]
    labels = [f"{i}: {t!r}" for i, t in enumerate(labels)]
    fig = go.Figure(go.Heatmap(z=z, y=labels, x=list(range(len(z[0]) if z else 0)),
                               colorscale=_SCALES.get(kind, "Viridis"), zmin=0,
                               colorbar={"title": f"p({result.answer.strip()})"}))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"{_TITLES.get(kind, kind)}: p_clean {result.clean_prob:.3f}, "
                            f"p_corrupt {result.corrupted_prob:.3f}",
                      xaxis_title="layer", height=120 + 28 * len(labels), margin={"l": 160})
    return fig


def trace_figures(result) -> list:
    return [trace_heatmap(result, k) for k in result.scores]


def edit_summary_figure(edited: dict, unedited: dict, reference: dict | None = None):
    """Grouped bars of efficacy / paraphrase / neighbourhood (percent)."""
    import plotly.graph_objects as go

    metrics = ["efficacy", "paraphrase", "neighborhood"]
    fig = go.Figure()
    fig.add_bar(name="unedited", x=metrics, y=[unedited.get(m) for m in metrics])
    fig.add_bar(name="ROME (ours)", x=metrics, y=[edited.get(m) for m in metrics])
    if reference:
        fig.add_bar(name="ROME, GPT-2 XL (paper)", x=metrics, y=[reference.get(m) for m in metrics])
    fig.update_layout(barmode="group", yaxis_title="% of cases", yaxis_range=[0, 100])
    return fig


def lens_figure(layers: Sequence[int], before: Sequence[float], after: Sequence[float],
                label: str):
    """p(label) per layer by the logit lens, before and after an edit."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=list(layers), y=list(before), name="before", mode="lines+markers")
    fig.add_scatter(x=list(layers), y=list(after), name="after", mode="lines+markers")
    fig.update_layout(title=f"logit lens: p({label.strip()}) at the last token", xaxis_title="layer",
                      yaxis_title="probability")
    return fig
