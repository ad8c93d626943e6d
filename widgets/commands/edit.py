"""``workbench edit``: ROME-edit each CounterFact case on a fresh model state, evaluate, undo.

Writes DIR/cases.jsonl (one row per case, appended as it goes), DIR/summary.json (edited and
unedited figures) and DIR/edit.html.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from workbench.arguments import add_model_args, load_session
from workbench.provenance import meta, write_json

log = logging.getLogger(__name__)

ROME_GPT2_XL = {"efficacy": 100.0, "paraphrase": 96.4, "neighborhood": 75.4}


def register(sub) -> None:
    p = sub.add_parser("edit", help="ROME-edit CounterFact cases one at a time and evaluate",
                       description=__doc__)
    add_model_args(p)
    p.add_argument("--cases", help="CounterFact flat-format JSON (a list of records)")
    p.add_argument("--merge", nargs="+", metavar="DIR",
                   help="instead of editing: combine the cases.jsonl of earlier runs (e.g. --skip "
                        "shards) into OUT/summary.json")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layer", type=int, default=None,
                   help="layer to edit (default: peak of the FFN causal-trace curve)")
    p.add_argument("--n", type=int, default=None, help="edit the first N usable cases")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first SKIP usable cases (to split a run over processes)")
    p.add_argument("--stats-corpus", default="data/corpus/tiny_corpus.txt",
                   help="corpus for the key statistics C = E[k k^T] (file, directory or hf:NAME)")
    p.add_argument("--stats-tokens", type=int, default=100_000, help="corpus tokens for C")
    p.add_argument("--gen-tokens", type=int, default=100,
                   help="tokens generated per case for fluency (0: skip fluency)")
    p.add_argument("--steps", type=int, default=25, help="Adam steps for v* (at most)")
    p.add_argument("--stop-nll", type=float, default=None,
                   help="stop the v* optimisation once the target's mean NLL falls below this "
                        "(default 0.3; ROME used 0.05, which fits v* to the prompt's wording)")
    p.add_argument("--prefixes", type=int, default=5, help="generated prefixes per length (5 and 10 tokens)")
    p.add_argument("--no-pin-prompt", action="store_true",
                   help="ROME's plain u (u . k* = 1 only); default also pins the prompt's own key")
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
    fields = [f for f in CaseScores.__dataclass_fields__]

    def scores(kind):
        return [CaseScores(**{k: r[kind][k] for k in fields}) for r in rows]

    secs = [r["edit_seconds"] for r in rows]
    summary = {"meta": meta(None, command="edit --merge", runs=list(args.merge), run_meta=metas),
               "edited": summarize(scores("edited")), "unedited": summarize(scores("unedited")),
               "seconds_per_edit": sum(secs) / len(secs) if secs else None,
               "rome_gpt2_xl": ROME_GPT2_XL}
    write_json(Path(args.out) / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("edited", "unedited")}, indent=2))
    return 0


def run(args) -> int:
    if args.merge:
        return merge(args)
    if not args.cases:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("give --cases FILE (or --merge DIR ... to combine earlier runs)")
    from editing import (
        EditRequest,
        RomeConfig,
        apply,
        case_token_ids,
        compute_rome_update,
        embedding_std,
        ffn_peak_layer,
        generate_texts,
        generation_entropy,
        key_stats,
        load_counterfact,
        score_case,
        summarize,
    )
    from editing.tracing import DEFAULT_FACTS
    from widgets.html.figures_editing import edit_summary_figure
    from widgets.html.report import HtmlReport
    from workbench.corpus import Corpus
    from workbench.errors import TokenError

    session = load_session(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = load_counterfact(args.cases)
    corpus = Corpus.load(args.stats_corpus, session.tokenizer,
                         max_tokens=max(args.stats_tokens * 2, 50_000))
    layer_curve = None
    if args.layer is None:
        sigma = embedding_std(session, corpus)
        layer, layer_curve = ffn_peak_layer(session, DEFAULT_FACTS, sigma)
        log.info("default layer from the FFN trace peak: %d", layer)
    else:
        layer = session.check_layer(args.layer)
    stats_t0 = time.perf_counter()
    stats = key_stats(session, layer, corpus, n_tokens=args.stats_tokens)
    stats_s = time.perf_counter() - stats_t0
    extra = {} if args.stop_nll is None else {"stop_nll": args.stop_nll}
    cfg = RomeConfig(steps=args.steps, prefixes_per_length=args.prefixes, seed=args.seed,
                     pin_prompt=not args.no_pin_prompt, **extra)

    rows_path = out / "cases.jsonl"
    rows_path.write_text("")
    edited, base, skipped, seconds = [], [], 0, []
    usable = 0
    for case in cases:
        if args.n is not None and len(edited) >= args.n:
            break
        try:
            ids = case_token_ids(session, case)
        except TokenError:
            skipped += 1
            continue
        usable += 1
        if usable <= args.skip:
            continue
        flu_b = flu_e = None
        if args.gen_tokens > 0:
            flu_b = generation_entropy(generate_texts(session, [case.prompt], args.gen_tokens,
                                                      seed=args.seed))
        b = score_case(session, case, ids, flu_b)
        t0 = time.perf_counter()
        upd = compute_rome_update(session, EditRequest(case.prompt, case.subject, case.target_new),
                                  stats, cfg)
        sec = time.perf_counter() - t0
        with apply(session, upd):
            if args.gen_tokens > 0:
                flu_e = generation_entropy(generate_texts(session, [case.prompt], args.gen_tokens,
                                                          seed=args.seed))
            e = score_case(session, case, ids, flu_e)
        edited.append(e)
        base.append(b)
        seconds.append(sec)
        row = {"case_id": case.case_id, "subject": case.subject, "target_new": case.target_new,
               "ground_truth": case.ground_truth, "edited": e.to_dict(), "unedited": b.to_dict(),
               "edit_seconds": sec, "nll": upd.info["nll"], "steps": upd.info["steps"]}
        with rows_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        log.info("case %s: eff %s para %s nb %s (%.1fs)", case.case_id, e.efficacy, e.paraphrase,
                 e.neighborhood, sec)
    summary = {
        "meta": meta(session, command="edit", cases=str(args.cases), layer=layer, skip=args.skip,
                     stats_corpus=corpus.name, stats_tokens=stats.n_tokens, config=cfg.to_dict(),
                     gen_tokens=args.gen_tokens, layer_curve=layer_curve),
        "edited": summarize(edited),
        "unedited": summarize(base),
        "skipped_multi_token": skipped,
        "seconds_per_edit": sum(seconds) / len(seconds) if seconds else None,
        "stats_seconds": stats_s,
        "rome_gpt2_xl": ROME_GPT2_XL,
    }
    write_json(out / "summary.json", summary)
    rep = HtmlReport("ROME edits", f"{session.name}, layer {layer}, {len(edited)} cases")
    rep.figure(edit_summary_figure(summary["edited"], summary["unedited"], ROME_GPT2_XL))
    rep.table([{"": k, **{m: summary[k].get(m) for m in ("efficacy", "paraphrase", "neighborhood",
                                                       "fluency", "n")}}
               for k in ("edited", "unedited")])
    rep.json_block(summary, "summary.json")
    rep.save(out / "edit.html")
    print(json.dumps({k: summary[k] for k in ("edited", "unedited")}, indent=2))
    return 0
