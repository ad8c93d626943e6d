"""The ``edit`` probe kind: ROME edits on a case file, evaluated and undone (editing/).

Runs `editing.run_edits`, the project's one edit-evaluation loop: for each usable case (objects
the tokenizer can produce; several tokens allowed), the model before and after a rank-one edit
of `layer`'s FFN is scored: efficacy, paraphrase and neighbourhood success in percent, the mean
probability gaps, and optionally ROME's generation-entropy fluency. Every edit is undone before
the next case, also on error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .context import ProbeContext
from .labels import LABELS_DIR
from .registry import Param, SpecError, register_kind
from .spec import PROJECT_ROOT

__all__ = ["run_edit", "default_cases_path"]

SHARED_CASES = PROJECT_ROOT.parent / "shared" / "data" / "counterfact" / "counterfact-val.json"


def default_cases_path() -> Path:
    """../shared CounterFact validation cases when present, else data/labels/edit_cases.json."""
    return SHARED_CASES if SHARED_CASES.is_file() else LABELS_DIR / "edit_cases.json"


def _available() -> str | None:
    if importlib.util.find_spec("editing.evaluate") is None or importlib.util.find_spec("editing.rome") is None:
        return "editing.rome / editing.evaluate are not in this checkout"
    return None


def _check(params: dict, where: str) -> None:
    reason = _available()
    if reason:
        raise SpecError(f"{where}: probe kind 'edit' is unavailable: {reason}")
    for k in ("n_cases", "stats_tokens", "steps"):
        if params[k] < 1:
            raise SpecError(f"{where} {k}={params[k]} must be >= 1")
    if params["gen_tokens"] < 0:
        raise SpecError(f"{where} gen_tokens={params['gen_tokens']} must be >= 0")


@register_kind(
    "edit",
    params={
        "layer": Param(int, doc="FFN layer to edit"),
        "cases_path": Param(str, "auto", doc="CounterFact-format cases ('auto': shared "
                                             "counterfact-val.json, else data/labels/edit_cases.json)"),
        "n_cases": Param(int, 4, doc="usable cases edited (in file order)"),
        "stats_tokens": Param(int, 20000, doc="corpus tokens for the key statistics E[k k^T]"),
        "steps": Param(int, 25, doc="Adam steps for v*"),
        "prefixes": Param(int, 5, doc="generated context prefixes per length"),
        "gen_tokens": Param(int, 0, doc="tokens generated for fluency (0: skip)"),
    },
    doc="ROME rank-one edits on a case file: efficacy, paraphrase and neighbourhood success "
        "(percent) before and after each edit, undone after scoring.",
    available=_available,
    check=_check,
)
def run_edit(ctx: ProbeContext, params: dict) -> dict:
    from editing import RomeConfig, key_stats, load_counterfact, run_edits, usable_cases

    s = ctx.session
    layer = s.check_layer(params["layer"])
    path = default_cases_path() if params["cases_path"] == "auto" else Path(params["cases_path"])
    usable, skipped = usable_cases(s, load_counterfact(path))
    if not usable:
        raise SpecError(f"no usable case in {path} (objects the tokenizer cannot produce; "
                        f"{skipped} skipped)")
    stats = key_stats(s, layer, ctx.corpus, n_tokens=min(params["stats_tokens"], len(ctx.corpus)),
                      window=ctx.spec.window, progress=ctx.progress)
    seed = ctx.seed_for("edit")
    cfg = RomeConfig(steps=params["steps"], prefixes_per_length=params["prefixes"], seed=seed)
    run = run_edits(s, usable[: params["n_cases"]], {layer: stats}, method="rome", config=cfg,
                    gen_tokens=params["gen_tokens"], blast=False, progress=ctx.progress, seed=seed)
    rows = [{"case_id": r["case_id"], "subject": r["subject"], "target_new": r["target_new"],
             "ground_truth": r["ground_truth"], "p_new_before": r["unedited"]["p_new"],
             "p_new_after": r["edited"]["p_new"], "p_true_after": r["edited"]["p_true"],
             "efficacy": r["edited"]["efficacy"], "paraphrase": r["edited"]["paraphrase"],
             "neighborhood": r["edited"]["neighborhood"], "edit_seconds": r["edit_seconds"]}
            for r in run.rows]
    sb = run.summary["unedited"]                       # `editing.summarize` of the unedited scores
    se = {k: run.summary[k] for k in sb}               # the same fields, edited
    return {"title": f"ROME edits at layer {layer}", "layer": layer, "cases_path": str(path),
            "n_edited": se["n"], "n_skipped": skipped, "stats_tokens": stats.n_tokens,
            "edited": se, "unedited": sb,
            "tables": {"summary": [{"state": "edited", **se}, {"state": "unedited", **sb}],
                       "cases": rows},
            "summary": {"efficacy": se["efficacy"], "paraphrase": se["paraphrase"],
                        "neighborhood": se["neighborhood"], "n": se["n"]}}
