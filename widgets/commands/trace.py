"""``workbench trace``: causal tracing of one fact or a file of facts -> JSON + HTML heatmaps.

    workbench trace "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower"
    workbench trace --facts known_1000.json --n 20 --out out/trace

Corrupts the subject's token embeddings with Gaussian noise and restores one hidden state
(residual, FFN or attention output, a window of layers for the latter two) at a time; the share
of the answer's probability each restoration brings back is the cell's score (Meng et al.
2022). Writes OUT/trace.json (fields: docs/cli.md) and OUT/trace.html.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from workbench.arguments import (
    add_model_args,
    add_prompt_args,
    check_model,
    check_path,
    check_positive,
    load_session,
    prompt_of,
)
from workbench.provenance import meta, write_json

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("trace", help="causal tracing: which hidden states carry a fact",
                       description=__doc__)
    add_model_args(p)
    add_prompt_args(p, "the fact's prompt (contains the subject, or '{}' for it)")
    p.add_argument("--subject", help="the subject's text")
    p.add_argument("--answer", default=None, help="traced token (default: the model's top-1)")
    p.add_argument("--facts", help="JSON list of {prompt, subject[, attribute]} (known_1000 format)")
    p.add_argument("--n", type=int, default=None, help="trace the first N facts of --facts")
    p.add_argument("--out", default="out/trace", help="output directory (trace.json, trace.html)")
    p.add_argument("--kinds", default="resid,mlp,attn", help="comma list of resid, mlp, attn")
    p.add_argument("--samples", type=int, default=None,
                   help="noise samples per cell (default: 10 on CUDA as in ROME; 2 on the CPU, which "
                        "keeps one fact under a minute on 2 cores)")
    p.add_argument("--noise-scale", type=float, default=3.0, help="noise std / embedding std")
    p.add_argument("--window", type=int, default=10, help="layers restored together (mlp, attn)")
    p.add_argument("--noise-corpus", default="data/corpus/tiny_corpus.txt",
                   help="corpus on which the embedding std is measured")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from editing import TraceConfig, embedding_std, load_known, trace_fact
    from widgets.html.figures_editing import trace_figures
    from widgets.html.report import HtmlReport
    from workbench.corpus import Corpus
    from workbench.errors import WorkbenchError

    prompt = prompt_of(args, required=False)
    check_path(args.facts, "--facts", "file")
    check_path(args.noise_corpus, "--noise-corpus")
    check_positive(n=args.n, samples=args.samples)
    if args.facts:
        facts = [(f.prompt, f.subject) for f in load_known(args.facts, args.n)]
    elif prompt and args.subject:
        facts = [(prompt, args.subject)]
    else:
        raise WorkbenchError("give a prompt (PROMPT or --prompt) and --subject, or --facts FILE")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    TraceConfig(kinds=kinds, samples=args.samples or 1, noise_scale=args.noise_scale,
                window=args.window, seed=args.seed)          # validated before the load
    check_model(args)                  # everything above runs before the model loads
    session = load_session(args)
    samples = args.samples or (10 if session.device.type == "cuda" else 2)
    cfg = TraceConfig(kinds=kinds, samples=samples, noise_scale=args.noise_scale, window=args.window,
                      seed=args.seed)
    corpus = Corpus.load(args.noise_corpus, session.tokenizer, max_tokens=20_000)
    sigma = embedding_std(session, corpus)
    out = Path(args.out)
    results = []
    rep = HtmlReport("Causal trace", f"{session.name}; noise {cfg.noise_scale} x embedding std "
                                     f"{sigma:.4g}; {cfg.samples} samples")
    for prompt, subject in facts:
        answer = args.answer if len(facts) == 1 else None
        r = trace_fact(session, prompt, subject, sigma, answer=answer, config=cfg, progress=True)
        results.append(r.to_dict())
        rep.heading(f"{r.prompt} -> {r.answer!r}")
        for fig in trace_figures(r):
            rep.figure(fig)
    write_json(out / "trace.json", {"meta": meta(session, command="trace", embedding_std=sigma,
                                                 noise_corpus=corpus.name),
                                    "facts": results})
    rep.save(out / "trace.html")
    print(json.dumps([{k: d[k] for k in ("prompt", "answer", "clean_prob", "corrupted_prob")}
                      for d in results], indent=2))
    print(f"json: {out / 'trace.json'}\nhtml: {out / 'trace.html'}")
    return 0
