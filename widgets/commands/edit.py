"""``workbench edit``: edit facts with ROME, MEMIT or AlphaEdit, evaluate, undo.

    workbench edit "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower" \\
        --target " Rome"                                          # one fact, ROME
    workbench edit --cases counterfact.json --n 100 --method memit --batch 100
    workbench edit --cases counterfact.json --n 1000 --method alphaedit --batch 100  # sequential

Every case is edited and scored by `editing.run_edits` (the project's one edit-evaluation
loop): ROME one fact at a time on a fresh model state; MEMIT a batch at a time on a fresh
state; AlphaEdit batch after batch, keeping earlier edits (sequential). The model ends exactly
as it began. Without --cases and without a prompt, the project's own edit cases
(data/labels/edit_cases.json) are used. Writes DIR/cases.jsonl (a row per case, as it goes),
DIR/summary.json (fields: docs/cli.md) and DIR/edit.html.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from workbench.arguments import (
    add_model_args,
    add_prompt_args,
    check_layers,
    check_model,
    check_path,
    check_positive,
    load_session,
    prompt_of,
)
from workbench.models import cache_root
from workbench.provenance import meta, write_json
from workbench.session import Session

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PROJECT_CASES = ROOT / "data" / "labels" / "edit_cases.json"
PROJECT_FACTS = ROOT / "data" / "labels" / "facts.json"
PROJECT_CORPUS = ROOT / "data" / "corpus" / "natural"
PUBLISHED = {
    "rome": {"source": "ROME, GPT-2 XL (Meng et al. 2022)", "efficacy": 100.0, "paraphrase": 96.4,
             "neighborhood": 75.4},
    "memit": {"source": "MEMIT, GPT-J, 10,000 edits (Meng et al. 2023)", "efficacy": 98.9,
              "paraphrase": 88.6, "neighborhood": 73.7},
    "alphaedit": {"source": "AlphaEdit, Llama-3-8B, 2,000 sequential edits (Fang et al. 2025)",
                  "efficacy": 98.9, "paraphrase": 94.2, "neighborhood": None},
}


def register(sub) -> None:
    import argparse

    p = sub.add_parser("edit", help="edit facts (ROME, MEMIT, AlphaEdit), evaluate and undo",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_prompt_args(p, "one fact's prompt (contains the subject, or '{}' for it)")
    p.add_argument("--subject", help="one fact: the subject's text")
    p.add_argument("--target", help="one fact: the new object (e.g. ' Rome'; several tokens allowed)")
    p.add_argument("--paraphrase", help="one fact: a rephrased prompt to score (default: none)")
    p.add_argument("--neighbour", help="one fact: an unrelated prompt that must keep its answer")
    p.add_argument("--cases", help="CounterFact flat-format JSON (a list of records); default: the "
                                   "project's own cases when no prompt is given")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="instead of editing: combine the cases.jsonl of earlier runs into OUT/summary.json")
    p.add_argument("--out", default="out/edit", help="output directory")
    p.add_argument("--method", default="rome", choices=["rome", "memit", "alphaedit"])
    p.add_argument("--batch", type=int, default=None,
                   help="requests per edit (ROME: 1; MEMIT default: all cases in one batch; "
                        "AlphaEdit default: 100)")
    p.add_argument("--sequential", action="store_true",
                   help="keep each batch's edit (default for AlphaEdit; MEMIT then piles batches up)")
    p.add_argument("--layer", type=int, action="append",
                   help="layer(s) to edit (ROME: one; MEMIT/AlphaEdit: repeat; default: the peak of "
                        "the FFN causal-trace curve, and for MEMIT/AlphaEdit the 5 layers around it)")
    p.add_argument("--n", type=int, default=None, help="edit the first N usable cases")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first SKIP cases (to split a run over processes)")
    p.add_argument("--stats-corpus", default=None,
                   help="corpus for the key statistics C = E[k k^T] (default: the project's natural "
                        "text, data/corpus/natural)")
    p.add_argument("--stats-tokens", type=int, default=20_000, help="corpus tokens for C (cached)")
    p.add_argument("--gen-tokens", type=int, default=0,
                   help="tokens generated per case for fluency (0: skip fluency; ROME used 100)")
    p.add_argument("--steps", type=int, default=20, help="Adam steps for v* / z* (at most)")
    p.add_argument("--stop-nll", type=float, default=None,
                   help="stop the v* optimisation once the target's mean NLL falls below this "
                        "(default 0.3; ROME used 0.05, which fits v* to the prompt's wording)")
    p.add_argument("--clamp", type=float, default=None,
                   help="bound on |delta| / |h| of v* / z* (default: the config's, 4.0 as in ROME; "
                        "MEMIT's published GPT-J setting is 0.75)")
    p.add_argument("--prefixes", type=int, default=3, help="generated prefixes per length (5 and 10 tokens)")
    p.add_argument("--lam", type=float, default=None, help="MEMIT/AlphaEdit: weight of the preserved keys")
    p.add_argument("--null-energy", type=float, default=None,
                   help="AlphaEdit: share of the preserved keys' energy E|k|^2 the null space may hold "
                        "(default: AlphaEditConfig.null_energy)")
    p.add_argument("--l2", type=float, default=None,
                   help="AlphaEdit: ridge relative to the batch keys' null-space energy (default: AlphaEditConfig.l2)")
    p.add_argument("--chunk", type=int, default=None,
                   help="MEMIT/AlphaEdit: requests per forward pass of the z* optimisation and key collection (default 16)")
    p.add_argument("--repair-rounds", type=int, default=0, metavar="N",
                   help="after each batch's edit, up to N rounds that re-edit (on the edited model, keeping "
                        "the requests that took) the requests that did not take on their own prompt; "
                        "each round a ledger entry (default 0: none)")
    p.add_argument("--z-cache", default=None, metavar="DIR",
                   help="MEMIT/AlphaEdit: keep each request's z* target in DIR (per weights, layer and "
                        "settings) as soon as its chunk is optimised; a run cut short and started again "
                        "skips those requests, a rerun with another --lam reuses them (default: off)")
    p.add_argument("--no-pin-prompt", action="store_true",
                   help="ROME's plain u (u . k* = 1 only); default also pins the prompt's own key")
    p.add_argument("--no-capability", action="store_true",
                   help="skip perplexity on held text and known-fact accuracy before / after")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def merge(args) -> int:
    """Summaries recomputed from the per-case rows of one or more earlier runs."""
    from editing import CaseScores, summarize
    from workbench.errors import WorkbenchError

    rows, metas = [], []
    for d in args.merge:
        f = Path(d) / "cases.jsonl"
        if not f.exists():
            raise WorkbenchError(f"--merge {d!r}: {f} does not exist")
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if (Path(d) / "summary.json").exists():
            metas.append(json.loads((Path(d) / "summary.json").read_text())["meta"])
    fields = list(CaseScores.__dataclass_fields__)

    def scores(kind):
        return [CaseScores(**{k: r[kind][k] for k in fields if k in r[kind]}) for r in rows]

    secs = [r["edit_seconds"] for r in rows]
    edited, unedited = summarize(scores("edited")), summarize(scores("unedited"))
    summary = {"meta": meta(None, command="edit --merge", runs=list(args.merge), run_meta=metas),
               **{k: edited[k] for k in ("efficacy", "paraphrase", "neighborhood", "fluency", "n")},
               "edited": edited, "unedited": unedited,
               "seconds_per_edit": sum(secs) / len(secs) if secs else None}
    out = Path(args.out)
    write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("edited", "unedited")}, indent=2))
    print(f"json: {out / 'summary.json'}")
    return 0


def _check(args) -> tuple[str | None, Any]:
    """Every flag, before the model loads."""
    from workbench.errors import WorkbenchError

    prompt = prompt_of(args, required=False)
    one = [x is not None for x in (prompt, args.subject, args.target)]
    if any(one) and not all(one):
        raise WorkbenchError("one fact needs a prompt (PROMPT or --prompt), --subject and --target")
    if prompt is not None and args.cases:
        raise WorkbenchError("give one fact (PROMPT --subject --target) or --cases FILE, not both")
    check_path(args.cases, "--cases", "file")
    if args.stats_corpus and not str(args.stats_corpus).startswith("hf:"):
        check_path(args.stats_corpus, "--stats-corpus")
    check_positive(n=args.n, batch=args.batch, stats_tokens=args.stats_tokens, steps=args.steps)
    if args.skip < 0 or args.gen_tokens < 0:
        raise WorkbenchError(f"--skip={args.skip} and --gen-tokens={args.gen_tokens} must be >= 0")
    if args.method == "rome" and (args.batch or 1) != 1:
        raise WorkbenchError(f"--batch={args.batch}: ROME edits one fact at a time; use --method "
                             "memit or alphaedit for batches")
    if args.method == "rome" and args.layer and len(args.layer) != 1:
        raise WorkbenchError(f"--layer given {len(args.layer)} times: ROME edits one layer")
    if args.method != "alphaedit" and (args.null_energy is not None or args.l2 is not None):
        raise WorkbenchError(f"--null-energy and --l2 are AlphaEdit's; --method {args.method} has no null space")
    if args.method == "rome" and (args.chunk is not None or args.lam is not None or args.z_cache is not None):
        raise WorkbenchError("--chunk, --lam and --z-cache are MEMIT's and AlphaEdit's; ROME edits one fact "
                             "with its own solve")
    check_positive(chunk=args.chunk)
    if args.clamp is not None and not 0 < args.clamp < float("inf"):
        raise WorkbenchError(f"--clamp={args.clamp} is out of range; give a finite bound > 0 on |delta| / |h|")
    if args.repair_rounds < 0:
        raise WorkbenchError(f"--repair-rounds={args.repair_rounds} is out of range; give an integer >= 0 "
                             "(0: no repair rounds; N: up to N per batch)")
    facts = check_model(args)
    check_layers(facts, args.layer)
    return prompt, facts


def _one_fact(session: Session, prompt: str, args):
    """An `EditCase` of the fact given on the command line (true object: the model's answer)."""
    from editing import EditCase, locate_subject

    sp = locate_subject(session, prompt, args.subject)
    truth = session.next_token(sp.text)
    neighbour = args.neighbour or "The capital of Japan is"
    return EditCase(0, sp.text, args.subject, args.target, truth, args.paraphrase or sp.text,
                    neighbour, session.next_token(neighbour))


def _edit_layers(session: Session, args, corpus, progress: bool) -> tuple[list[int], list[float] | None]:
    """The layers to edit: given, or the FFN causal-trace peak (cached per model and corpus)."""
    from editing import embedding_std, ffn_peak_layer
    from editing.loop import layers_from_curve
    from editing.tracing import DEFAULT_FACTS

    if args.layer:
        return [session.check_layer(x) for x in args.layer], None
    key = cache_root() / "edit_layers" / f"{session.name.replace('/', '_')}-{session.n_layers}.json"
    if key.exists():
        curve = json.loads(key.read_text())["curve"]
    else:
        sigma = embedding_std(session, corpus)
        _, curve = ffn_peak_layer(session, DEFAULT_FACTS, sigma, progress=progress)
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps({"curve": curve, "facts": len(DEFAULT_FACTS)}))
    return list(layers_from_curve(curve, args.method)), curve


def run(args) -> int:
    if args.merge:
        return merge(args)
    prompt, _ = _check(args)
    from editing import (
        AlphaEditConfig,
        MemitConfig,
        RomeConfig,
        ZCache,
        held_windows,
        layers_key_stats,
        load_counterfact,
        run_edits,
    )
    from widgets.html.figures_editing import edit_summary_figure
    from widgets.html.report import HtmlReport
    from workbench.corpus import Corpus

    progress = not args.no_progress
    session = load_session(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if prompt is not None:
        cases, source = [_one_fact(session, prompt, args)], "command line"
    else:
        path = args.cases or str(PROJECT_CASES)
        cases, source = load_counterfact(path)[args.skip:], path
    if args.n is not None:
        cases = cases[: args.n * 2]         # room for unusable ones; run_edits counts them
    corpus = Corpus.load(args.stats_corpus or PROJECT_CORPUS, session.tokenizer,
                         max_tokens=args.stats_tokens + 8192)
    layers, curve = _edit_layers(session, args, corpus, progress)
    t0 = time.perf_counter()
    stats = layers_key_stats(session, layers, corpus, n_tokens=args.stats_tokens, progress=progress)
    stats_s = time.perf_counter() - t0
    common: dict[str, Any] = dict(steps=args.steps, prefixes_per_length=args.prefixes, seed=args.seed,
                                  pin_prompt=not args.no_pin_prompt)
    if args.stop_nll is not None:
        common["stop_nll"] = args.stop_nll
    if args.clamp is not None:
        common["clamp"] = args.clamp
    cfg: RomeConfig | MemitConfig
    if args.method == "rome":
        cfg = RomeConfig(**common)
    else:
        extra: dict[str, Any] = {} if args.lam is None else {"lam": args.lam}
        if args.chunk is not None:
            extra["chunk"] = args.chunk
        if args.method == "alphaedit":
            extra.update({k: v for k, v in (("null_energy", args.null_energy), ("l2", args.l2)) if v is not None})
        cfg = (MemitConfig if args.method == "memit" else AlphaEditConfig)(
            layers=tuple(layers), **common, **extra)
    batch = 1 if args.method == "rome" else (args.batch or (100 if args.method == "alphaedit" else len(cases)))
    held = known = None
    if not args.no_capability:
        held = held_windows(session, corpus, n_tokens=4096, skip=args.stats_tokens)
        known = [(f["prompt"], " " + f["answer"]) for f in json.loads(PROJECT_FACTS.read_text())]
    if args.n is not None:
        from editing import usable_cases

        cases = usable_cases(session, cases)[0][: args.n]
    rows_path = out / "cases.jsonl"
    rows_path.write_text("")

    def on_row(row: dict) -> None:
        with rows_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    res = run_edits(session, cases, stats, method=args.method, batch_size=batch,
                    sequential=True if args.sequential else None, config=cfg, held=held,
                    known=known or (), gen_tokens=args.gen_tokens, progress=progress,
                    on_row=on_row, seed=args.seed, blast_corpus=corpus, repair_rounds=args.repair_rounds,
                    z_cache=ZCache(args.z_cache) if args.z_cache else None)
    s = res.summary
    summary = {
        "meta": meta(session, command="edit", cases=source, method=args.method, layer=layers[0],
                     layers=layers, batch=batch, skip=args.skip,
                     stats_corpus=corpus.name, config=cfg.to_dict(), gen_tokens=args.gen_tokens,
                     layer_curve=curve, repair_rounds=args.repair_rounds),
        **{k: s[k] for k in ("efficacy", "paraphrase", "neighborhood", "fluency", "n")},
        "perplexity_before": s["perplexity_before"], "perplexity_after": s["perplexity_after"],
        "first_batch_efficacy_at_end": s["first_batch_efficacy_at_end"],
        **{k: s[k] for k in ("repair_rounds", "repair_edits", "repair_took", "efficacy_before_repair", "z_cached")},
        "edited": {k: v for k, v in s.items() if k != "unedited"}, "unedited": s["unedited"],
        "skipped": s["skipped"], "seconds_per_edit": s["seconds_per_edit"], "stats_seconds": stats_s,
        "published": PUBLISHED[args.method], "rome_gpt2_xl": {k: PUBLISHED["rome"][k] for k in
                                                              ("efficacy", "paraphrase", "neighborhood")},
        "blast_auroc": s["blast_auroc"], "blast_auroc_reach": s["blast_auroc_reach"], "blast_radius": s["blast_radius"], "ledger": res.ledger,
    }
    write_json(out / "summary.json", summary)
    pub = {k: v for k, v in PUBLISHED[args.method].items() if k != "source"}
    rep = HtmlReport(f"{args.method.upper()} edits",
                     f"{session.name}, layers {layers}, {s['n']} cases, batch {batch}"
                     + (", sequential" if s["sequential"] else ""))
    rep.text("Efficacy: the new object beats the true one on the edited prompt; paraphrase: on a "
             "rephrasing; neighbourhood: an unrelated prompt keeps its answer (percent of cases).")
    rep.figure(edit_summary_figure(summary["edited"], summary["unedited"], pub))
    rep.table([{"": k, **{m: summary[k].get(m) for m in ("efficacy", "paraphrase", "neighborhood",
                                                       "fluency", "n")}}
               for k in ("edited", "unedited")])
    rep.table([{"perplexity before": s["perplexity_before"], "perplexity after": s["perplexity_after"],
                "known facts before": s["known_accuracy_before"], "known facts after": s["known_accuracy_after"],
                "blast-radius AUROC": s["blast_auroc"], "AUROC of reach alone": s["blast_auroc_reach"], "broken neighbours": s["n_broken_neighbours"]}],
              caption="general capability and blast radius")
    from widgets.html.editing import blast_rows, repair_rows

    rrows, rcaption = repair_rows(s)
    if rrows:
        rep.table(rrows, caption=rcaption)
    if s["blast_radius"]:
        b = s["blast_radius"]
        rep.text("Blast radius of the first edit (predicted before it was applied, from the unedited "
                 "model's FFN keys): the corpus tokens whose key the update reaches most, "
                 "reach = sum over layers |k . D_l|.")
        rows, prompts = blast_rows(b)
        rep.table(rows, caption="corpus tokens reached most")
        if prompts:
            rep.table(prompts, caption="neighbourhood prompts of the first batch, by reach")
    rep.table([{"case": r["case_id"], "subject": r["subject"], "new": r["target_new"],
                "efficacy": r["edited"]["efficacy"], "paraphrase": r["edited"]["paraphrase"],
                "neighbourhood": r["edited"]["neighborhood"], "reach": r.get("reach")}
               for r in res.rows[:50]], caption="cases (first 50)")
    rep.json_block(summary, "summary.json")
    rep.save(out / "edit.html")
    print(json.dumps({k: summary[k] for k in ("efficacy", "paraphrase", "neighborhood", "n",
                                              "perplexity_before", "perplexity_after")}, indent=2))
    print(f"json: {out / 'summary.json'}\ncases: {rows_path}\nhtml: {out / 'edit.html'}")
    return 0
