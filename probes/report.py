"""HTML rendering of battery results (the dict a battery writes; nothing is recomputed).

Every probe kind has a renderer registered here with `set_renderer`; figures come from
`widgets.html.figures_probes`. The page: header (model, spec hash, versions, timings), a summary
table of all probes, then one section per probe, then the spec and full JSON folded away.
"""

from __future__ import annotations

from typing import Any

from widgets.html import figures_probes as figs
from widgets.html.render import register_renderer, render_into
from widgets.html.report import HtmlReport, escape

from .registry import kinds

__all__ = ["render_battery", "headline"]


def headline(rec: dict) -> str:
    """One line describing a probe's outcome for the summary table."""
    if rec["status"] == "failed":
        return f"failed: {rec['error']}"
    s = (rec.get("result") or {}).get("summary", {})
    return ", ".join(f"{k}={_fmt(v)}" for k, v in s.items())


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def render_battery(results: dict) -> HtmlReport:
    """A standalone page for one battery run."""
    registry = kinds()
    m = results.get("model", {})
    r = HtmlReport(results.get("title") or results["battery"],
                   subtitle=results.get("description") or None)
    r.table([{"model": m.get("name"), "layers": m.get("n_layers"), "d_model": m.get("d_model"),
              "device": m.get("device"), "dtype": m.get("dtype"), "seed": results["seed"],
              "spec hash": results["spec_hash"], "created": results["created"],
              "total seconds": results["timings"]["total_s"]}])
    v = results["versions"]
    r.html(f"<p class='muted'>workbench {escape(v['workbench_version'])}, torch {escape(v['torch'])}, "
           f"transformer-lens {escape(v['transformer_lens'])}, python {escape(v['python'])}. "
           f"Probes ran: {results['counts']['ran']}, reused from cache: "
           f"{results['counts']['cached']}, failed: {results['counts']['failed']}.</p>")
    r.heading("Summary")
    r.table([{"probe": p["name"], "kind": p["kind"], "status": p["status"],
              "seconds": p["seconds"], "result": headline(p)} for p in results["probes"]])
    linear = [(p["name"], p["result"]) for p in results["probes"]
              if p["kind"] == "linear" and p["result"]]
    if len(linear) > 1:
        r.figure(figs.selectivity_overview(linear))
    notes = {q.get("name"): q.get("note") for q in results.get("spec", {}).get("probe", [])}
    for p in results["probes"]:
        r.heading(f"{p['name']} ({p['kind']})")
        kind = registry.get(p["kind"])
        if notes.get(p["name"]):
            r.html(f"<p><b>What to see:</b> {escape(notes[p['name']])}</p>")
        if kind is not None and kind.doc:
            r.html(f"<p class='muted'>{escape(kind.doc)}</p>")
        if isinstance(p.get("result"), dict) and p["result"].get("note"):
            r.html(f"<p><b>What it shows here:</b> {escape(p['result']['note'])}</p>")
        if p["result"] is None:
            r.text(f"Failed: {p['error']}")
            continue
        render_into(p["result"], r, key=f"probe:{p['kind']}", params=p["params"])
    r.heading("Spec")
    r.json_block(results["spec"], "battery spec")
    return r


def _render_linear(res: dict, r: HtmlReport, params: dict) -> None:
    counts = ", ".join(f"{c}: {n}" for c, n in zip(res["classes"], res["class_counts"]))
    r.text(f"{res['n_examples']} examples ({counts}); {res['n_train']} train / {res['n_test']} "
           f"held out; {res['n_types']} token types; {res['config']['model']} probe, "
           f"C={res['config']['C']}.")
    r.figure(figs.linear_probe_figure(res))
    best = max(res["layers"], key=lambda x: x["selectivity"])
    r.table([best], caption="most selective layer")


def _render_knowledge(res: dict, r: HtmlReport, params: dict) -> None:
    med = res["median_first_top1_correct"]
    r.text(f"{res['n_facts']} facts from {res['source']}; final prediction accuracy "
           f"{res['accuracy']:.3f}; median first top-1 layer (correct facts) "
           f"{'n/a' if med is None else med}.")
    r.figure(figs.knowledge_curve_figure(res))
    r.figure(figs.first_top1_figure(res))
    rows = [{"prompt": f["prompt"], "answer": f["answer_token"], "first top-1": f["first_top1_layer"],
             "final top": f["final_top_token"], "correct": f["final_correct"], "p final": f["final_p"]}
            for f in res["facts"][:25]]
    r.table(rows, caption="first 25 facts")


def _render_tables(res: dict, r: HtmlReport, params: dict) -> None:
    """Kinds that return per-layer rows under ``layers`` and named tables under ``tables``."""
    if res.get("layers"):
        numeric = [k for k, v in res["layers"][0].items()
                   if k != "layer" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric:
            r.figure(figs.layer_table_figure(res["layers"], numeric, res.get("title", "by layer")))
        r.table(res["layers"])
    for name, rows in (res.get("tables") or {}).items():
        if rows:
            r.table(rows, caption=name)
    scalars = {k: v for k, v in res.items() if isinstance(v, (int, float, str)) and k != "title"}
    if scalars:
        r.table([scalars])


_RENDERERS = {"linear": _render_linear, "knowledge": _render_knowledge}
for _name in kinds():
    register_renderer(f"probe:{_name}", _RENDERERS.get(_name, _render_tables))
