"""Figure builders for FFN memories and vocabulary projections: pure functions, result -> figure.

Inputs are the result dataclasses of `workbench.vocab`, `workbench.memories` and
`workbench.moe` (or their JSON rows); nothing here touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .figures import round4, short

__all__ = ["logit_lens_heatmap", "target_curve", "sub_update_bars", "agreement_figure",
           "sparsity_figure", "expert_share_figure"]


def logit_lens_heatmap(lens, kind: str = "resid_post", target: int | None = 0) -> go.Figure:
    """Layers x tokens: text = the lens's top-1 token; colour = the target's probability
    (or the top-1 probability when `target` is None or the lens has no targets)."""
    ki = lens.kinds.index(kind)
    strs = lens.top_strs[ki]                                   # [layer][pos][k]
    n_layers, n_pos = len(strs), len(strs[0])
    text = [[short(strs[layer][p][0], 8) for p in range(n_pos)] for layer in range(n_layers)]
    if target is not None and len(lens.targets) > target:
        z = lens.target_probs[ki, :, :, target].numpy()
        ctitle = f"p({short(lens.targets[target], 12)})"
    else:
        z = lens.top_probs[ki, :, :, 0].numpy()
        ctitle = "p(top)"
    fig = go.Figure(go.Heatmap(
        z=round4(z), x=list(range(n_pos)), y=list(range(n_layers)), text=text, texttemplate="%{text}",
        textfont={"size": 8}, colorscale="Blues", zmin=0, zmax=1, colorbar={"title": {"text": ctitle}},
        hovertemplate="layer %{y} · pos %{x}<br>top: %{text}<br>" + ctitle + "=%{z:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Logit lens ({kind}): top token per layer; colour {ctitle}",
        xaxis=dict(title="token", tickmode="array", tickvals=list(range(n_pos)),
                   ticktext=[short(t) for t in lens.str_tokens], tickangle=-45),
        yaxis_title="layer", height=max(360, 14 * n_layers + 140), margin=dict(l=50, r=20, t=50, b=90))
    return fig


def target_curve(lens, target: int = 0, pos: int = -1) -> go.Figure:
    """The target's probability (top panel) and rank (bottom panel, log scale, 1 = top) across
    layers and sublayers: two quantities of different scale never share an axis."""
    from plotly.subplots import make_subplots

    n_layers = lens.n_layers
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.55, 0.45])
    x = np.arange(n_layers)
    for ki, kind in enumerate(lens.kinds):
        off = {"resid_pre": -1 / 3, "resid_mid": 0.0, "resid_post": 1 / 3}.get(kind, 0.0)
        fig.add_trace(go.Scatter(x=round4(x + off), y=round4(lens.target_probs[ki, :, pos, target].numpy()),
                                 mode="lines+markers", name=f"p {kind}"), row=1, col=1)
    ki = lens.kinds.index("resid_post") if "resid_post" in lens.kinds else len(lens.kinds) - 1
    ranks = [int(r) + 1 for r in lens.target_ranks[ki, :, pos, target].tolist()]
    fig.add_trace(go.Scatter(x=x.tolist(), y=ranks, mode="lines+markers", line=dict(color="#555"),
                             name="rank (resid_post)"), row=2, col=1)
    decades = [10 ** e for e in range(0, len(str(max(ranks))) + 1)]
    fig.update_yaxes(title_text="probability", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="rank (1 = top)", type="log", autorange="reversed",
                     tickvals=decades, ticktext=[f"{d:,}" for d in decades], row=2, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    fig.update_layout(title=f"Target {short(lens.targets[target], 14)!r} across layers",
                      height=460, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def sub_update_bars(subs, by: str = "magnitude") -> go.Figure:
    """Top sub-updates m_i v_i of one layer: bar = |m_i| ||v_i|| or the target effect."""
    rows = subs.by_magnitude if by == "magnitude" or not subs.by_target else subs.by_target
    labels = [f"n{r.neuron}: {' '.join(short(t.token, 8) for t in r.promoted[:3])}" for r in rows]
    y = [r.magnitude if by == "magnitude" else r.target_effect for r in rows]
    colors = ["#1f77b4" if r.coefficient >= 0 else "#d62728" for r in rows]
    fig = go.Figure(go.Bar(x=round4(y), y=labels, orientation="h", marker_color=colors,
                           customdata=[[r.coefficient, r.value_norm] for r in rows],
                           hovertemplate="%{y}<br>m=%{customdata[0]:.3g} ||v||=%{customdata[1]:.3g}"
                                         "<br>%{x:.3g}<extra></extra>"))
    what = "|m_i| · ||v_i||" if by == "magnitude" else f"effect on logit of {subs.target!r}"
    fig.update_layout(title=f"Layer {subs.layer} sub-updates at {short(subs.token, 12)!r}: {what} "
                            "(red: m_i < 0)",
                      yaxis=dict(autorange="reversed"), height=max(300, 24 * len(rows) + 100),
                      margin=dict(l=220, r=20, t=50, b=40))
    return fig


def _col(rows: Sequence[dict], name: str) -> list:
    return [r[name] for r in rows]


def agreement_figure(rows: Sequence[dict]) -> go.Figure:
    """Per layer: key-value agreement vs the random-key baseline, and the composition share."""
    layers = _col(rows, "layer")
    fig = go.Figure([
        go.Scatter(x=layers, y=round4(_col(rows, "agreement")), mode="lines+markers", name="agreement"),
        go.Scatter(x=layers, y=round4(_col(rows, "random_baseline")), mode="lines+markers",
                   name="random-key baseline", line=dict(dash="dash")),
    ])
    comp = [r.get("composition") for r in rows]
    if any(c is not None for c in comp):
        fig.add_trace(go.Scatter(x=layers, y=[None if c is None else float(round4(c)) for c in comp],
                                 mode="lines", name="composition share", line=dict(dash="dot")))
    fig.update_layout(title="Key-value agreement per layer (Geva et al. 2021)", xaxis_title="layer",
                      yaxis=dict(title="share of keys / tokens", rangemode="tozero"), height=380,
                      margin=dict(l=50, r=20, t=50, b=50),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def sparsity_figure(rows: Sequence[dict]) -> go.Figure:
    """Per layer: mean share of active keys per token, with its standard deviation."""
    fig = go.Figure(go.Bar(x=_col(rows, "layer"), y=round4(_col(rows, "active_share")),
                           error_y=dict(type="data", array=round4(_col(rows, "std")))))
    fig.update_layout(title="Activation sparsity: share of keys active per token", xaxis_title="layer",
                      yaxis_title="active share", height=340, margin=dict(l=50, r=20, t=50, b=50))
    return fig


def expert_share_figure(shares) -> go.Figure:
    """Mean share of the FFN output carried by each token's top-j experts: k-means vs random."""
    j = list(range(1, shares.n_experts + 1))
    fig = go.Figure([
        go.Scatter(x=j, y=round4(shares.top_curve.numpy()), mode="lines+markers", name="k-means experts"),
        go.Scatter(x=j, y=round4(shares.top_curve_random.numpy()), mode="lines+markers",
                   name="random partition", line=dict(dash="dash")),
    ])
    fig.update_layout(title=f"Layer {shares.layer}: output norm share of each token's top-j experts",
                      xaxis_title="experts (largest first)", yaxis=dict(title="share", range=[0, 1]),
                      height=340, margin=dict(l=50, r=20, t=50, b=50))
    return fig


def direct_effects_figure(effects) -> go.Figure:
    """Per layer, the attention and FFN direct effects on the target's logit (grouped bars)."""
    layers = list(range(len(effects.ffn)))
    fig = go.Figure([
        go.Bar(x=layers, y=round4(list(effects.attn)), name="attention", marker_color="#1f77b4"),
        go.Bar(x=layers, y=round4(list(effects.ffn)), name="FFN", marker_color="#ff7f0e"),
    ])
    fig.update_layout(title=f"Direct effects on the logit of {short(effects.target, 14)!r} "
                            f"(embedding {effects.embedding:+.2f})", barmode="group",
                      xaxis_title="layer", yaxis_title="logit contribution", height=340,
                      margin=dict(l=50, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig
