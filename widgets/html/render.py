"""Standalone HTML export of any result, view, or a whole session's analyses.

One file, plotly.js inlined once, no network needed to open it, readable without a kernel:
where a view had controls, the file holds its current state as static figures and tables.

    export_html(lens, "out/lens.html")                 # a result
    export_html([explorer, attention], "out/a.html")   # views (their current state)
    export_session(controller, "out/session.html")     # everything the controller computed

Result types render through `RENDERERS` (type -> fn(result, report)); pillars register theirs
with `register_renderer`. An unknown result renders as a table of its scalar fields.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .report import HtmlReport

log = logging.getLogger(__name__)

__all__ = ["export_html", "export_session", "render_into", "register_renderer", "renderer_for",
           "RENDERERS", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 5_000_000
RENDERERS: dict[type | str, Callable[..., None]] = {}
_LOADED: list[bool] = []


def register_renderer(key: type | str, fn: Callable[..., None]) -> None:
    """Render results of type `key` (or battery results of probe kind `key`, a string) with
    ``fn(result, report, **context)``; the one result -> HTML dispatch of the project."""
    RENDERERS[key] = fn


def renderer_for(key: type | str) -> Callable[..., None] | None:
    """The renderer registered for a result type (searched along its MRO) or a probe kind."""
    _builtin_renderers()
    if isinstance(key, str):
        return RENDERERS.get(key)
    for cls in key.__mro__:
        if cls in RENDERERS:
            return RENDERERS[cls]
    return None


def _builtin_renderers() -> None:
    if _LOADED:
        return
    _LOADED.append(True)
    from editing.outcome import EditOutcome
    from editing.tracing import TraceResult
    from workbench.attention import AttentionResult
    from workbench.ffmaps import FFMaps
    from workbench.graphs import AttributionGraph, GraphDiff
    from workbench.lenses import LensKL
    from workbench.memory_cards import MemoryCard
    from workbench.moe_quality import QualityCurve
    from workbench.prompt_lens import PromptLens
    from workbench.saes.steering import SteerOutcome
    from workbench.vocab import SubUpdates

    from .editing import compare_html, edit_bars
    from .ffmaps import ff_change_figure, layer_rows, maps_slider_figure, pairs_rows
    from .figures import attention_heatmap, head_norm_heatmap, lens_heatmap, next_token_bars
    from .figures_editing import trace_heatmap
    from .graph import graph_figure, graph_summary_rows
    from .memory import examples_table, value_bars
    from .moe import accuracy_figure, curve_rows, lens_kl_figure, perplexity_figure
    from .sae import steer_html

    def lens(r: PromptLens, rep: HtmlReport) -> None:
        rep.heading(f"{r.lens.capitalize()} lens: {r.prompt!r}")
        rep.text(f"Next token: {r.prediction!r}" + (f" under {len(r.edits)} edits" if r.edits else ""))
        rep.figure(lens_heatmap(r)).figure(next_token_bars(r))
        if r.edits:
            rep.table([dataclasses.asdict(e) for e in r.edits], caption="edits in force")

    def att(r: AttentionResult, rep: HtmlReport) -> None:
        rep.heading(f"Attention: {r.prompt!r}")
        # the most concentrated head of the last layer shown; norms of every layer as a table
        last = len(r.layers) - 1
        head = int(r.patterns[last].max(-1).mean(-1).argmax())
        rep.figure(attention_heatmap(r, last, head)).figure(head_norm_heatmap(r, last))
        rep.table([{"layer": ly, **{f"h{h}": float(r.head_norms[i, :, h].mean())
                                    for h in range(r.n_heads)}} for i, ly in enumerate(r.layers)],
                  caption="mean head-output norm per layer and head", digits=3)

    def subs(r: SubUpdates, rep: HtmlReport) -> None:
        rep.heading(f"FFN sub-updates, layer {r.layer} at token {r.position} ({r.token!r})")
        rep.table([{"neuron": u.neuron, "m": u.coefficient, "|v|": u.value_norm,
                    "promotes": " ".join(repr(t.token) for t in u.promoted),
                    "suppresses": " ".join(repr(t.token) for t in u.suppressed)}
                   for u in r.by_magnitude])

    def outcome(r: EditOutcome, rep: HtmlReport) -> None:
        rep.heading(f"Edit: {r.subject!r} → {r.target!r} at layer {r.layer}")
        rep.figure(edit_bars(r))
        rep.html(compare_html(r))

    def steered(r: SteerOutcome, rep: HtmlReport) -> None:
        rep.heading(f"SAE steering: feature {r.feature}")
        rep.html(steer_html(r))

    def memory(r: MemoryCard, rep: HtmlReport) -> None:
        rep.heading(f"FFN memory: layer {r.layer}, unit {r.neuron}")
        rep.figure(value_bars(r))
        rep.html(examples_table(r))

    def trace(r: TraceResult, rep: HtmlReport) -> None:
        rep.heading(f"Causal trace: {r.prompt!r} (subject {r.subject!r}, answer {r.answer!r})")
        rep.text(f"p clean {r.clean_prob:.3f}, subject corrupted {r.corrupted_prob:.3f}")
        for k in r.scores:
            rep.figure(trace_heatmap(r, k))

    def graph(r: AttributionGraph, rep: HtmlReport) -> None:
        rep.heading(f"Attribution graph: {r.prompt!r}" + (f" → {r.target!r}" if r.target else ""))
        rep.table(graph_summary_rows(r), caption="summary")
        rep.figure(graph_figure(r))

    def gdiff(r: GraphDiff, rep: HtmlReport) -> None:
        rep.heading("Graph before / after an edit: influence changes")
        rep.text(f"{len(r.gained)} nodes gained, {len(r.lost)} lost; logits before {r.logits_before}, "
                 f"after {r.logits_after}")
        rep.table([{"node": c.id, "label": c.label, "before": c.before, "after": c.after,
                    "delta": c.delta} for c in r.nodes[:25]])

    def ffm(r: FFMaps, rep: HtmlReport) -> None:
        rep.heading(f"FF blocks through attention maps: {r.prompt!r}")
        rep.figure(maps_slider_figure(r)).figure(ff_change_figure(r))
        rep.table(layer_rows(r), caption="per-layer FF statistics", digits=3)
        rep.table(pairs_rows(r), caption="token pairs the FF block amplifies most", digits=3)

    def moe_curve(r: QualityCurve, rep: HtmlReport) -> None:
        rep.heading(f"MoEfication quality curve ({r.n_experts} experts per FFN)")
        rep.figure(perplexity_figure(r))
        if r.accuracy:
            rep.figure(accuracy_figure(r))
        rep.table(curve_rows(r), digits=3)

    def lkl(r: LensKL, rep: HtmlReport) -> None:
        rep.heading("Lenses: KL to the final distribution per layer")
        rep.figure(lens_kl_figure(r))
        rep.table(r.rows(), digits=3)

    for cls, fn in ((FFMaps, ffm), (QualityCurve, moe_curve), (LensKL, lkl), (AttributionGraph, graph), (GraphDiff, gdiff), (PromptLens, lens), (AttentionResult, att), (SubUpdates, subs),
                    (EditOutcome, outcome), (SteerOutcome, steered), (MemoryCard, memory),
                    (TraceResult, trace)):
        RENDERERS.setdefault(cls, fn)


def _generic(result: Any, rep: HtmlReport) -> None:
    rep.heading(type(result).__name__)
    rows = []
    fields = dataclasses.fields(result) if dataclasses.is_dataclass(result) else []
    for f in fields:
        v = getattr(result, f.name)
        if isinstance(v, (int, float, str, bool)) or v is None:
            rows.append({"field": f.name, "value": v})
        elif isinstance(v, np.ndarray) or hasattr(v, "shape"):
            rows.append({"field": f.name, "value": f"array {tuple(v.shape)}"})
        elif isinstance(v, (tuple, list)) and len(v) <= 20:
            rows.append({"field": f.name, "value": ", ".join(map(str, v))})
    if rows:
        rep.table(rows, columns=["field", "value"])
    else:
        rep.code(repr(result)[:4000])


def render_into(obj: Any, rep: HtmlReport, key: type | str | None = None, **context) -> None:
    """Add one result or view (anything with `.report(rep)`) to `rep`.

    `key` overrides the lookup by type (battery results are dicts, keyed by probe kind).
    """
    if key is None and hasattr(obj, "report") and callable(obj.report):
        obj.report(rep)
        return
    fn = renderer_for(type(obj) if key is None else key)
    if fn is not None:
        fn(obj, rep, **context)
    elif isinstance(obj, dict):
        rep.json_block(obj, "result")
    else:
        _generic(obj, rep)


def export_html(objs: Any | Iterable[Any], path: str | Path, title: str = "Workbench report",
                subtitle: str | None = None, max_bytes: int | None = MAX_REPORT_BYTES) -> Path:
    """Write `objs` (a result, a view, or a list of them) to one standalone HTML file.

    Raises ValueError when the file would exceed `max_bytes` (None: no limit); plotly.js
    alone is about 4.8 MB, so a default report holds a few dozen figures at most.
    """
    items = list(objs) if isinstance(objs, (list, tuple)) else [objs]
    rep = HtmlReport(title, subtitle)
    for obj in items:
        render_into(obj, rep)
    html = rep.render()
    size = len(html.encode("utf-8"))
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"report would be {size / 1e6:.2f} MB, over max_bytes={max_bytes / 1e6:.2f} MB;"
                         " export fewer results or pass max_bytes=None")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    log.info("wrote %s (%.2f MB)", path, size / 1e6)
    return path


def export_session(controller, path: str | Path, views: Iterable[Any] = (),
                   title: str = "Workbench session", latest_only: bool = True,
                   max_bytes: int | None = MAX_REPORT_BYTES) -> Path:
    """Export the current state of `views` and the results `controller` computed.

    With `latest_only`, keep the newest result of each type (a session's running log of
    edits would otherwise repeat the same figure many times).
    """
    hist = list(controller.history)
    if latest_only:
        seen: dict[type, Any] = {}
        for r in hist:
            seen[type(r)] = r
        hist = list(seen.values())
    views = list(views)
    shown = {type(getattr(v, "result", getattr(v, "lens", None))) for v in views}
    items = views + [r for r in hist if type(r) not in shown]
    s = controller.session
    sub = f"model {s.name} · {s.n_layers} layers · d_model {s.d_model} · device {s.device}"
    return export_html(items, path, title, sub, max_bytes)
