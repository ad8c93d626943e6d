"""FF blocks through attention maps (Kobayashi et al. 2024) drawn: pure functions from `FFMaps`.

`maps_figure(r, layer)` shows the row-normalised contextualisation maps S_s[i, j] after each
component of one layer side by side (ATB, ATB+RES, ..., the scopes of `LayerMaps.scopes`);
`maps_slider_figure(r)` holds every computed layer with plotly's own slider (works offline in
a static HTML file); `ff_change_figure(r)` draws the per-layer FF statistics; `pair_figure`
shows one (i, j) cell's contribution norms ||v^s_{i<-j}|| per component and per head;
`pairs_rows` is the amplified-pairs table. The widget and the HTML use the same builders.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.ffmaps import FFMaps, LayerMaps

from .figures import round4, short

__all__ = ["maps_figure", "maps_slider_figure", "ff_change_figure", "pair_figure", "pairs_rows",
           "layer_rows"]


def _labels(r: FFMaps) -> list[str]:
    return [f"{k} {short(t)}" for k, t in enumerate(r.str_tokens)]


def _heatmaps(r: FFMaps, lm: LayerMaps, visible: bool = True) -> list[go.Heatmap]:
    """One heatmap per scope of `lm` (shares S_s, lower triangle; the upper one is None)."""
    S = lm.shares.numpy()
    n = S.shape[-1]
    labels = _labels(r)
    out = []
    for s, name in enumerate(lm.scopes):
        z = round4(S[s]).tolist()
        for i in range(n):
            for j in range(i + 1, n):
                z[i][j] = None
        out.append(go.Heatmap(
            z=z, x=labels, y=labels, coloraxis="coloraxis", visible=visible,
            name=f"L{lm.layer} {name}",
            hovertemplate=(f"L{lm.layer} {name}<br>query %{{y}} ← source %{{x}}: share %{{z:.3f}}"
                           "<extra></extra>")))
    return out


def _grid(r: FFMaps, n_scopes: int, titles: list[str]) -> go.Figure:
    fig = make_subplots(rows=1, cols=n_scopes, subplot_titles=titles, horizontal_spacing=0.02,
                        shared_yaxes=True)
    n = len(r.str_tokens)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1,
                                     colorbar=dict(title="share", thickness=12)),
                      height=max(360, 120 + 22 * n), width=max(900, 230 * n_scopes),
                      margin=dict(l=110, r=30, t=70, b=110))
    for c in range(1, n_scopes + 1):
        fig.update_xaxes(tickangle=-60, tickfont=dict(size=9), row=1, col=c, type="category")
        fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=1, col=c, type="category")
    return fig


def _title(lm: LayerMaps) -> str:
    return (f"Layer {lm.layer}: contextualisation maps after each component (row shares); "
            f"FF re-ranks by 1-ρ = {1 - lm.ff_rho:.3f}, changes by {lm.ff_change:.3f}, "
            f"ff_retained = {lm.ff_retained:.2f} of it survives")


def maps_figure(r: FFMaps, layer: int) -> go.Figure:
    """Maps S_s of one layer, one panel per scope, rows = query i, columns = source j."""
    lm = r.layer(layer)
    fig = _grid(r, len(lm.scopes), list(lm.scopes))
    for c, h in enumerate(_heatmaps(r, lm), start=1):
        fig.add_trace(h, row=1, col=c)
    fig.update_layout(title=dict(text=_title(lm), font=dict(size=13)))
    return fig


def maps_slider_figure(r: FFMaps) -> go.Figure:
    """Every computed layer's maps in one figure; plotly's slider shows one layer at a time."""
    lm0 = r.layers[0]
    n_s = len(lm0.scopes)
    fig = _grid(r, n_s, list(lm0.scopes))
    for k, lm in enumerate(r.layers):
        for c, h in enumerate(_heatmaps(r, lm, visible=k == 0), start=1):
            fig.add_trace(h, row=1, col=c)
    steps = []
    for k, lm in enumerate(r.layers):
        vis = [k == t // n_s for t in range(len(r.layers) * n_s)]
        steps.append(dict(method="update", label=str(lm.layer),
                          args=[{"visible": vis}, {"title.text": _title(lm)}]))
    fig.update_layout(title=dict(text=_title(lm0), font=dict(size=13)),
                      sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="layer "),
                                    pad=dict(t=60))])
    fig.update_layout(height=fig.layout.height + 80)
    return fig


def _nan(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def ff_change_figure(r: FFMaps) -> go.Figure:
    """Per layer: 1 - ρ(S_before, S_FF), ||ΔS_FF|| / ||S_before||, ρ(ΔFF, Δafter), FF retained."""
    layers = [lm.layer for lm in r.layers]
    fig = go.Figure()
    for name, vals in (
        ("FF re-ranking 1 − ff_rho", [1 - lm.ff_rho for lm in r.layers]),
        ("FF change ff_change", [lm.ff_change for lm in r.layers]),
        ("cancellation cancel_rho", [lm.cancel_rho for lm in r.layers]),
        ("FF change retained ff_retained", [lm.ff_retained for lm in r.layers]),
    ):
        fig.add_trace(go.Scatter(x=layers, y=[_nan(v) for v in vals], mode="lines+markers", name=name,
                                 hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title="How much the FF block changes the map, and how much of it survives",
                      xaxis_title="layer", yaxis_title="value", height=400,
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=60, r=20, t=50, b=100))
    return fig


def pair_figure(r: FFMaps, layer: int, i: int, j: int) -> go.Figure:
    """Contribution of source j to query i after each component: norm ||v^s_{i<-j}|| and share,
    plus the ATB norm per head."""
    lm = r.layer(layer)
    n = lm.maps.shape[-1]
    if not (0 <= j <= i < n):
        raise IndexError(f"cell (i={i}, j={j}) is not in the causal lower triangle of {n} positions")
    norms = lm.maps[:, i, j].tolist()
    shares = lm.shares[:, i, j].tolist()
    heads = lm.head_maps[:, i, j].tolist()
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        subplot_titles=("per component (norm; share on hover)", "attention per head (norm)"))
    fig.add_trace(go.Bar(x=list(lm.scopes), y=norms, customdata=shares, name="norm",
                         marker_color=["#ff7f0e" if s == lm.ff_scope else "#1f77b4"
                                       for s in range(len(lm.scopes))],
                         hovertemplate="%{x}: ||v|| = %{y:.3g}, share %{customdata:.3f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=[f"h{h}" for h in range(len(heads))], y=heads, name="heads",
                         marker_color="#2ca02c", hovertemplate="%{x}: %{y:.3g}<extra></extra>"),
                  row=1, col=2)
    tok = r.str_tokens
    fig.update_layout(title=f"Layer {layer}: query {i} {tok[i]!r} ← source {j} {tok[j]!r}",
                      showlegend=False, height=340, margin=dict(l=50, r=20, t=60, b=60))
    return fig


def pairs_rows(r: FFMaps) -> list[dict]:
    """The amplified pairs as table rows (largest gain first)."""
    return [{"layer": p.layer, "query": f"{p.i} {p.query!r}", "source": f"{p.j} {p.source!r}",
             "share before FF": p.share_before, "share after FF": p.share_after, "gain": p.gain}
            for p in r.pairs]


def layer_rows(r: FFMaps) -> list[dict]:
    """The per-layer statistics and decomposition errors as table rows."""
    return [{"layer": lm.layer, "ff_rho": lm.ff_rho, "ff_change": lm.ff_change,
             "cancel_rho": lm.cancel_rho, "ff_retained": lm.ff_retained,
             "max rel. error (no FF)": max(lm.errors[: lm.ff_scope]),
             "max rel. error (FF)": lm.errors[lm.ff_scope]} for lm in r.layers]
