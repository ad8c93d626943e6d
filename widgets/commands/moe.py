"""``workbench moe``: MoEfication end to end (Zhang et al. 2022) -> quality curve JSON + HTML.

    workbench moe --out out/moe
    workbench moe --experts 48 --shares 0.1,0.25,0.5,1.0 --train-tokens 2048 --held-tokens 1024

Splits every FFN's units into EXPERTS equal-size experts (KMeans of the keys, balanced), picks
each token's top-k experts with the paper's similarity router and with a small trained MLP
router, runs the model keeping only those experts in every routed layer, and measures held-text
perplexity and known-fact accuracy at each share of experts. Compared against a random
partition (same sizes, similarity router) and the oracle (the k experts with the largest output
norm, which needs the full FFN). The router is trained on the first TRAIN_TOKENS of CORPUS, the
perplexity read on its last HELD_TOKENS (disjoint). Also times the sparse expert forward of one
layer against its dense FFN on this machine. Writes OUT/moe.json (fields: docs/cli.md) and
OUT/moe.html.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.arguments import (
    add_model_args,
    check_layers,
    check_model,
    check_path,
    check_positive,
    load_session,
)
from workbench.errors import ShapeError, WorkbenchError, choices
from workbench.provenance import meta, write_json

METHODS = ("similarity", "mlp", "oracle", "random-partition", "random-router")
DEFAULT_METHODS = "similarity,mlp,oracle,random-partition"


def register(sub) -> None:
    p = sub.add_parser("moe", help="MoEfication: quality against the share of FFN experts kept",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--experts", type=int, default=48, help="experts per FFN")
    p.add_argument("--shares", default="0.1,0.25,0.5,1.0",
                   help="comma list of shares of experts kept, each in (0, 1]")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of routers to compare, from {', '.join(METHODS)}")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to route (default: all)")
    p.add_argument("--corpus", default="data/corpus/natural",
                   help="text file or folder: routers train on its start, perplexity on its end")
    p.add_argument("--train-tokens", type=int, default=2048, help="tokens the MLP router trains on")
    p.add_argument("--held-tokens", type=int, default=1024, help="held tokens for perplexity")
    p.add_argument("--router-steps", type=int, default=300, help="Adam steps per MLP router")
    p.add_argument("--facts", default="data/labels/facts.json",
                   help="JSON list of {prompt, answer} for accuracy ('none' to skip)")
    p.add_argument("--timing-tokens", type=int, default=2048, help="tokens in the sparse-forward timing")
    p.add_argument("--window", type=int, default=128, help="perplexity window (tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/moe", help="output folder (moe.json, moe.html)")
    p.set_defaults(func=run)


def parse_shares(text: str) -> list[float]:
    try:
        shares = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ShapeError(f"--shares={text!r} is not a comma list of numbers in (0, 1]") from None
    if not shares:
        raise ShapeError(f"--shares={text!r} is empty; give shares in (0, 1], e.g. 0.1,0.5,1.0")
    for s in shares:
        if not 0 < s <= 1:
            raise ShapeError(f"--shares: {s} is out of range; every share must be in (0, 1]")
    return shares


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise WorkbenchError(f"--methods={text!r} is empty; choose from {choices(METHODS)}")
    for m in methods:
        if m not in METHODS:
            raise WorkbenchError(f"--methods: {m!r} is unknown; choose from {choices(METHODS)}")
    if len(set(methods)) != len(methods):
        raise WorkbenchError(f"--methods={text!r} names a method twice")
    return methods


def load_facts(path: str | None) -> tuple[list[str], list[str]] | None:
    """(prompts, answers) from a JSON list of {prompt, answer}; None for 'none'."""
    if path is None or path.lower() == "none":
        return None
    check_path(path, "--facts", "file")
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"--facts={path!r} is not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw or not all(
            isinstance(f, dict) and isinstance(f.get("prompt"), str) and isinstance(f.get("answer"), str)
            and f["prompt"].strip() and f["answer"].strip() for f in raw):
        raise WorkbenchError(f"--facts={path!r} must be a non-empty JSON list of "
                             "{\"prompt\": str, \"answer\": str}")
    return [f["prompt"] for f in raw], [f["answer"] for f in raw]


def check_args(args):
    """Every argument checked before the model loads; returns (shares, methods, facts)."""
    check_positive(experts=args.experts, train_tokens=args.train_tokens, held_tokens=args.held_tokens,
                   router_steps=args.router_steps, timing_tokens=args.timing_tokens)
    if args.window < 2:
        raise ShapeError(f"--window={args.window} must be >= 2 (one prediction per window needs 2 tokens)")
    for flag, n in (("--train-tokens", args.train_tokens), ("--held-tokens", args.held_tokens)):
        if n < args.window:
            raise ShapeError(f"{flag}={n} is shorter than --window={args.window}; give at least one window")
    shares, methods = parse_shares(args.shares), parse_methods(args.methods)
    check_path(args.corpus, "--corpus")
    facts = load_facts(args.facts)
    if args.layers is not None and len(set(args.layers)) != len(args.layers):
        raise ShapeError(f"--layers {args.layers} names a layer twice; give each once")
    mf = check_model(args)
    check_layers(mf, args.layers, "--layers")
    if mf is not None and not args.experts <= mf.d_mlp:
        raise ShapeError(f"--experts={args.experts} is out of range; {mf.name} has d_mlp={mf.d_mlp} "
                         f"units per FFN (1..{mf.d_mlp})")
    return shares, methods, facts


def run(args) -> int:
    shares, methods, facts = check_args(args)

    from widgets.html.moe import accuracy_figure, curve_rows, perplexity_figure, timing_rows
    from widgets.html.report import HtmlReport
    from workbench.corpus import Corpus
    from workbench.moe_quality import k_for_share, quality_curve
    from workbench.moe_routing import (
        make_partitions,
        oracle_router,
        random_router,
        similarity_router,
        train_mlp_routers,
    )
    from workbench.moe_sparse import time_sparse_ffn

    t_all = time.perf_counter()
    s = load_session(args)
    if not args.experts <= s.d_mlp:
        raise ShapeError(f"--experts={args.experts} is out of range; the model has d_mlp={s.d_mlp} (1..{s.d_mlp})")
    layers = list(range(s.n_layers)) if args.layers is None else [s.check_layer(x) for x in args.layers]
    full = Corpus.load(args.corpus, s.tokenizer)
    need = args.train_tokens + args.held_tokens
    if len(full) < need:
        raise WorkbenchError(f"--corpus={args.corpus!r} has {len(full)} tokens; --train-tokens + "
                             f"--held-tokens = {need} must fit in it (disjoint)")
    train = Corpus(f"{full.name}[:{args.train_tokens}]", full.ids[: args.train_tokens], s.tokenizer)
    held = Corpus(f"{full.name}[-{args.held_tokens}:]", full.ids[-args.held_tokens :], s.tokenizer)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    parts = make_partitions(s, args.experts, layers, "balanced", args.seed)
    seconds["partition"] = time.perf_counter() - t
    routers: dict[str, list] = {}
    for m in methods:
        t = time.perf_counter()
        if m == "similarity":
            routers[m] = [similarity_router(s, p) for p in parts]
        elif m == "mlp":
            routers[m] = train_mlp_routers(s, train, parts, steps=args.router_steps,
                                           max_tokens=args.train_tokens, window=args.window, seed=args.seed)
        elif m == "oracle":
            routers[m] = [oracle_router(s, p) for p in parts]
        elif m == "random-partition":
            rparts = make_partitions(s, args.experts, layers, "random", args.seed)
            routers[m] = [similarity_router(s, p) for p in rparts]
        else:
            routers[m] = [random_router(p, args.seed + p.layer) for p in parts]
        seconds[f"router {m}"] = time.perf_counter() - t

    answers = None if facts is None else (facts[0], [" " + a.lstrip() for a in facts[1]])
    t = time.perf_counter()
    curve = quality_curve(s, routers, held, shares, answers, max_tokens=args.held_tokens, window=args.window)
    seconds["quality curve"] = time.perf_counter() - t

    t = time.perf_counter()
    mid = layers[len(layers) // 2]
    timer = next(r for r in routers.get("similarity", routers[methods[0]]) if r.layer == mid)
    if timer.needs_coefficients:
        timer = similarity_router(s, timer.experts)
    timings = [time_sparse_ffn(s, timer, k_for_share(sh, args.experts), n_tokens=args.timing_tokens,
                               repeats=5, seed=args.seed) for sh in shares]
    seconds["timing"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_all

    out = Path(args.out)
    data = {"meta": meta(s),
            "config": {"experts": args.experts, "shares": shares, "methods": methods, "layers": layers,
                       "corpus": args.corpus, "train_tokens": args.train_tokens,
                       "held_tokens": args.held_tokens, "router_steps": args.router_steps,
                       "window": args.window, "facts": None if facts is None else args.facts,
                       "seed": args.seed},
            "curve": curve.to_dict(),
            "timing": [t.to_dict() for t in timings],
            "seconds": seconds}
    write_json(out / "moe.json", data)

    rep = HtmlReport("MoEfication: quality against the share of experts",
                     f"model {s.name} · {args.experts} experts per FFN · {len(layers)} layers routed")
    rep.heading("Perplexity on held text")
    rep.text("Lower is better and the dashed line is the unmodified model: a good router stays near it "
             "with few experts, the oracle bounds what any router can reach with this partition, and "
             "the random partition shows what the KMeans clustering of keys is worth.")
    rep.figure(perplexity_figure(curve))
    if curve.accuracy:
        rep.heading("Known-fact accuracy")
        rep.text("Share of facts whose answer's first token is still the model's top-1 next token with "
                 "only the top-k experts kept.")
        rep.figure(accuracy_figure(curve))
    rep.table(curve_rows(curve), digits=4)
    rep.heading("Sparse expert forward on this machine")
    rep.text(f"Layer {mid}'s FFN on {args.timing_tokens} random tokens: the dense module against "
             "computing only each token's chosen experts (gather, compute, scatter-add); a speed-up "
             "below 1 means the gather costs more than the skipped units save here.")
    rep.table(timing_rows(timings), digits=4)
    rep.heading("Gated MLPs and the premise")
    rep.text("MoEfication was shown on ReLU models, whose coefficients are mostly exactly zero, so "
             "skipping inactive experts is free. SmolLM2 and Gemma use gated SiLU / GELU FFNs: "
             "m_i = act(x·g_i)(x·u_i) is never exactly zero and takes both signs, so every dropped "
             "expert changes the output; the curve above measures what that costs.")
    rep.save(out / "moe.html")
    line = ", ".join(f"{m} {curve.perplexity[m][0]:.3g}" for m in methods)
    print(f"perplexity at {shares[0]:.0%} of experts (unmodified {curve.base_perplexity:.3g}): {line}; "
          f"{seconds['total']:.0f} s")
    print(f"json: {out / 'moe.json'}\nhtml: {out / 'moe.html'}")
    return 0
