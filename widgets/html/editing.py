"""HTML and figures of an edit's outcome (p before / after, continuations, the edit diff)."""

from __future__ import annotations

import plotly.graph_objects as go

from editing.outcome import EditOutcome

from .figures import short
from .report import escape
from .tables import table_html

__all__ = ["edit_bars", "compare_html", "blast_html", "blast_rows"]


def edit_bars(out: EditOutcome) -> go.Figure:
    """p(old answer) and p(new target) before and after the edit."""
    names = [f"answer {out.answer!r}", f"target {out.target!r}"]
    fig = go.Figure([
        go.Bar(x=names, y=[out.p_before["answer"], out.p_before["target"]], name="before",
               marker_color="#b8bfcc"),
        go.Bar(x=names, y=[out.p_after["answer"], out.p_after["target"]], name="after edit",
               marker_color="#d62728"),
    ])
    fig.update_layout(title=f"Edit at layer {out.layer}{'' if out.active else ' (undone)'}",
                      barmode="group", yaxis=dict(title="p", range=[0, 1]), height=300,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig


def compare_html(out: EditOutcome) -> str:
    state = "applied" if out.active else "undone: weights restored exactly"
    rows = [{"": "greedy continuation", "before": out.gen_before, "after": out.gen_after},
            {"": "top next tokens", "before": ", ".join(f"{short(t, 12)} {p:.2f}" for t, p in out.top_before),
             "after": ", ".join(f"{short(t, 12)} {p:.2f}" for t, p in out.top_after)}]
    diff = [{"unit": u, "|u_i| |r|": v} for u, v in out.units]
    return (f"<p><b>Edit</b> {escape(out.subject)!s} → {escape(out.target)} at layer "
            f"{out.layer} ({state}); ‖ΔW‖/‖W‖ = {out.delta_rel:.4f}</p>"
            + table_html(rows, ["", "before", "after"])
            + "<p><b>Edit diff</b> W' = W + u rᵀ: rows of W_out moved most; r = v* − v promotes "
            + f"(read through the {escape(out.lens)} lens) "
            + escape(", ".join(repr(t) for t in out.r_promotes)) + "</p>"
            + table_html(diff, ["unit", "|u_i| |r|"])
            + blast_html(out))


def blast_rows(blast: dict) -> tuple[list[dict], list[dict]]:
    """Table rows of a blast radius (`BlastRadius.to_dict()`): the corpus tokens reached most,
    and the neighbour prompts with their reach and whether they are predicted to break."""
    rows = [{"context": "…" + p["context"][-60:], "token": p["token"], "reach": p["reach"]}
            for p in blast["prefixes"]]
    prompts = [{"neighbour prompt": p["prompt"], "reach": p["reach"],
                **({"answer": p["answer"], "margin": p["margin"],
                    "break score": "target leads" if p["break_score"] is None else p["break_score"]}
                   if "margin" in p else {}),
                "predicted to break": "yes" if p["predicted"] else ""} for p in blast["prompts"]]
    return rows, prompts


def repair_rows(summary: dict) -> tuple[list[dict], str]:
    """Table rows of an edit run's repair rounds (`run_edits` summary: repair_edits, repair_took,
    efficacy_before_repair, efficacy_at_edit or efficacy) and their caption; no rows without
    repair rounds."""
    if not summary.get("repair_rounds"):
        return [], ""
    rows = [{"round": r + 1, "requests re-edited": n, "took right after": t}
            for r, (n, t) in enumerate(zip(summary["repair_edits"], summary["repair_took"], strict=True))]
    after = summary.get("efficacy_at_edit")
    after = summary["efficacy"] if after is None else after
    return rows, (f"repair rounds: efficacy after each batch's first update "
                  f"{summary['efficacy_before_repair']:.1f}, after its repair rounds {after:.1f}")


def blast_html(out: EditOutcome) -> str:
    """The blast radius predicted before the edit: the corpus prefixes it reaches most."""
    b = out.blast
    if b is None:
        return ""
    q = b.reach_quantiles
    head = ("<p><b>Blast radius</b> (predicted before the edit, from the unedited keys): the "
            "corpus tokens whose FFN key the update reaches most, reach = |u · k| |r|"
            + (f"; corpus median {q['0.5']:.3g}, 99th percentile {q['0.99']:.3g}, max {q['max']:.3g}"
               if q else "") + "</p>")
    rows, prompts = blast_rows(b.to_dict())
    return (head + (table_html(rows, ["context", "token", "reach"]) if rows else "")
            + (table_html(prompts, list(prompts[0])) if prompts else ""))
