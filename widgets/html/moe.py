"""MoEfication and lens comparisons drawn: pure functions from `QualityCurve`, `SparseTiming`
and `LensKL` to plotly figures and table rows (shared by `workbench moe`, the renderers and
the notebooks)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from workbench.lenses import LensKL
from workbench.moe_quality import QualityCurve

__all__ = ["perplexity_figure", "accuracy_figure", "curve_rows", "timing_rows", "lens_kl_figure"]

COLORS = {"similarity": "#1f77b4", "mlp": "#2ca02c", "oracle": "#9467bd", "random": "#d62728"}


def _color(name: str) -> str | None:
    for k, c in COLORS.items():
        if name.startswith(k):
            return c
    return None


def _dash(name: str) -> str:
    return "dot" if "random" in name else "solid"


def perplexity_figure(c: QualityCurve) -> go.Figure:
    """Held-text perplexity against the share of experts kept (log y), one line per method."""
    x = [100 * s for s in c.shares]
    fig = go.Figure()
    for name, ys in c.perplexity.items():
        fig.add_trace(go.Scatter(x=x, y=list(ys), mode="lines+markers", name=name,
                                 line=dict(color=_color(name), dash=_dash(name)),
                                 customdata=list(c.ks),
                                 hovertemplate=f"{name}<br>%{{x:.0f}}% (k=%{{customdata}}): "
                                               "ppl %{y:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 100], y=[c.base_perplexity] * 2, mode="lines", name="unmodified model",
                             line=dict(color="#333", dash="dash", width=1),
                             hovertemplate=f"unmodified model: ppl {c.base_perplexity:.4g}<extra></extra>"))
    vals = [v for ys in c.perplexity.values() for v in ys if v and math.isfinite(v)] + [c.base_perplexity]
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    fig.update_layout(title=f"Held-text perplexity with only the top-k of {c.n_experts} experts "
                            f"per FFN ({len(c.layers)} layers routed, {c.n_tokens} tokens)",
                      xaxis=dict(title="experts kept (%)", range=[0, 102]),
                      yaxis=dict(title="perplexity (log)", type="log", range=[lo - 0.1, hi + 0.1]), height=430,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def accuracy_figure(c: QualityCurve) -> go.Figure:
    """Known-fact top-1 accuracy against the share of experts kept."""
    x = [100 * s for s in c.shares]
    fig = go.Figure()
    for name, ys in c.accuracy.items():
        fig.add_trace(go.Scatter(x=x, y=list(ys), mode="lines+markers", name=name,
                                 line=dict(color=_color(name), dash=_dash(name)),
                                 hovertemplate=f"{name}<br>%{{x:.0f}}%: %{{y:.2f}}<extra></extra>"))
    if not math.isnan(c.base_accuracy):
        fig.add_hline(y=c.base_accuracy, line=dict(color="#333", dash="dash", width=1),
                      annotation_text=f"unmodified model {c.base_accuracy:.2f}")
    fig.update_layout(title=f"Known-fact accuracy ({c.n_facts} facts, first answer token top-1)",
                      xaxis=dict(title="experts kept (%)", range=[0, 102]),
                      yaxis=dict(title="accuracy", range=[-0.02, 1.02]), height=400,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def curve_rows(c: QualityCurve) -> list[dict]:
    """One row per (method, share): k, perplexity, its ratio to the unmodified model, accuracy."""
    rows = []
    for name, ys in c.perplexity.items():
        acc = c.accuracy.get(name, ())
        for t, (s, k, p) in enumerate(zip(c.shares, c.ks, ys)):
            rows.append({"method": name, "share": s, "k": k, "perplexity": p,
                         "× unmodified": p / c.base_perplexity,
                         "fact accuracy": acc[t] if t < len(acc) else None})
    return rows


def timing_rows(timings) -> list[dict]:
    """`SparseTiming` rows: dense FFN vs sparse expert forward."""
    return [{"layer": t.layer, "k": f"{t.k}/{t.n_experts}", "tokens": t.n_tokens, "device": t.device,
             "dtype": t.dtype, "dense ms": t.dense_ms, "sparse ms": t.sparse_ms,
             "speed-up": t.speedup, "max |diff|": t.max_abs_diff} for t in timings]


def lens_kl_figure(r: LensKL) -> go.Figure:
    """Mean KL(final || lens) per layer for each lens kind (log y)."""
    fig = go.Figure()
    for kind, ys in r.kl.items():
        fig.add_trace(go.Scatter(x=list(r.layers), y=list(ys), mode="lines+markers", name=kind,
                                 hovertemplate=f"{kind}<br>layer %{{x}}: KL %{{y:.3g}} nats<extra></extra>"))
    fig.update_layout(title=f"KL to the final distribution per layer ({r.n_tokens} tokens of {r.corpus})",
                      xaxis_title="layer", yaxis=dict(title="KL (nats, log)", type="log"), height=400,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig
