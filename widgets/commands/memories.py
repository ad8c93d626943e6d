"""``workbench memories``: harvest FFN key-value memories over a corpus (Geva et al. 2021).

    workbench memories --corpus ../shared/data/corpus --out out/memories --max-tokens 100000

Streams the corpus (``--max-tokens`` caps it), keeps every key's top-k trigger prefixes and its
activation frequency and mean, writes the index to OUT/index/ (index.json + index.safetensors,
reload with ``MemoryIndex.load``), computes the per-layer key-value agreement table against a
random-key baseline and the composition share, and writes OUT/memories.json (fields:
docs/cli.md) and OUT/memories.html. ``--ray [ADDRESS]`` shards the harvest over Ray workers
(local Ray without an address, or "auto" / "ray://HOST:PORT"); the merge is exact, so the
index is the same as a single-process harvest. ``--lens tuned|jacobian`` reads the example
memories' values through that saved lens's linear part (the agreement table keeps the logit
reading of the paper).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from workbench.arguments import (
    add_lens_arg,
    add_model_args,
    check_layers,
    check_lens,
    check_model,
    check_path,
    load_session,
)
from workbench.errors import ShapeError, WorkbenchError
from workbench.provenance import meta, write_json
from workbench.session import Session


def register(sub) -> None:
    p = sub.add_parser("memories", help="harvest FFN key-value memories and their agreement table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--corpus", required=True, help="a .txt file, a folder of them, or hf:NAME[:SPLIT]")
    p.add_argument("--out", required=True, help="output folder (index/, memories.json, memories.html)")
    p.add_argument("--layers", type=int, nargs="+", help="layers to harvest (default all)")
    p.add_argument("--k", type=int, default=20, help="top trigger prefixes kept per key")
    p.add_argument("--max-tokens", type=int, default=None, help="corpus tokens to harvest (default all)")
    p.add_argument("--window", type=int, default=64, help="tokens per window (a prefix's longest reach)")
    p.add_argument("--tokens-per-batch", type=int, default=8192)
    p.add_argument("--k-tokens", type=int, default=10, help="agreement: a value's top promoted tokens")
    p.add_argument("--prefixes", type=int, default=3, help="agreement: top trigger prefixes per key")
    p.add_argument("--composition-tokens", type=int, default=1024,
                   help="corpus tokens sampled for the composition share (0: skip)")
    p.add_argument("--examples", type=int, default=8, help="example memories shown per chosen layer")
    add_lens_arg(p, "the example memories' values are read")
    # ---- scale-out (teammate: workbench.distributed) --------------------------------------
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="shard the harvest over Ray workers: local Ray without ADDRESS, or "
                        "'auto' / 'ray://HOST:PORT' to join a cluster")
    p.add_argument("--ray-workers", type=int, default=None, help="Ray worker actors (default: GPUs or 1)")
    # -------------------------------------------------------------------------------------------
    p.set_defaults(func=run)


def check_args(args) -> None:
    """Validate numbers before the model loads (layers are checked against the model later)."""
    for name in ("k", "window", "tokens_per_batch", "k_tokens", "prefixes"):
        if getattr(args, name) <= 0:
            raise ShapeError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise ShapeError(f"--max-tokens={args.max_tokens} must be >= 1")
    if args.prefixes > args.k:
        raise ShapeError(f"--prefixes={args.prefixes} exceeds --k={args.k} (prefixes kept per key)")
    if args.composition_tokens < 0:
        raise ShapeError(f"--composition-tokens={args.composition_tokens} must be >= 0")
    if args.ray is not None:  # before the model loads: one clear error naming the extra
        from workbench.distributed.ray_backend import require_ray

        require_ray()


def _harvest(args, session: Session, corpus, layers):
    """Single process, or Ray shards merged exactly (same index either way)."""
    from workbench.memories import harvest, index_from_merged

    if args.ray is None:
        return harvest(session, corpus, layers=layers, k=args.k, window=args.window,
                       tokens_per_batch=args.tokens_per_batch, max_tokens=args.max_tokens), {}
    # ---- Ray path (workbench.distributed) ---------------------------------------------------
    from workbench.distributed import RayConfig, WorkerModel, ray_harvest

    cfg = RayConfig(address=None if args.ray == "local" else args.ray, workers=args.ray_workers)
    merged, timing = ray_harvest(WorkerModel.of(session), corpus, cfg, layers=layers, k=args.k,
                                 window=args.window, tokens_per_batch=args.tokens_per_batch,
                                 max_tokens=args.max_tokens)
    return index_from_merged(session, corpus, merged, args.window), {
        "address": args.ray, "shards": timing.get("shards"), "workers": len(timing.get("workers", [])),
        "merge_seconds": timing.get("merge_seconds")}


def run(args) -> int:
    from widgets.html.figures_vocab import agreement_figure
    from widgets.html.report import HtmlReport
    from workbench.corpus import Corpus
    from workbench.memory_agreement import agreement
    from workbench.vocab import value_tokens

    from .lens import read_lens

    check_args(args)
    check_lens(args.lens)
    if args.layers is not None and not args.layers:
        raise WorkbenchError("--layers is empty")
    if not str(args.corpus).startswith("hf:"):
        check_path(args.corpus, "--corpus")
    check_layers(check_model(args), args.layers, "--layers")   # all before the model loads
    s = load_session(args)
    reader = read_lens(s, args.lens, None)        # a missing / foreign lens fails before the harvest
    layers = None if args.layers is None else [s.check_layer(x) for x in args.layers]
    corpus = Corpus.load(args.corpus, s.tokenizer, max_tokens=args.max_tokens)
    corpus.source = str(args.corpus)
    if len(corpus) < args.window:
        raise WorkbenchError(f"corpus {corpus.name!r} has {len(corpus)} tokens, fewer than one "
                             f"--window={args.window}")
    out = Path(args.out)
    t0 = time.perf_counter()
    index, ray_info = _harvest(args, s, corpus, layers)
    seconds = time.perf_counter() - t0
    index.save(out / "index")
    t1 = time.perf_counter()
    table = agreement(s, index, corpus, k_tokens=args.k_tokens, prefixes=args.prefixes,
                      composition_tokens=args.composition_tokens)
    agree_s = time.perf_counter() - t1
    rows = table.rows()
    freq = index.frequency
    keys = [{"layer": layer, "mean_frequency": float(freq[i].mean()),
             "never_positive": int((freq[i] == 0).sum()), "mean_coefficient": float(index.mean[i].mean()),
             "top_coefficient": float(index.values[i, :, 0].max())}
            for i, layer in enumerate(index.layers)]
    # examples: the layer with the largest agreement margin, its keys with the largest top value
    best = max(range(len(rows)), key=lambda i: rows[i]["agreement"] - rows[i]["random_baseline"])
    layer = index.layers[best]
    neurons = index.values[best, :, 0].topk(min(args.examples, index.d_mlp)).indices.tolist()
    vt = {v.neuron: v for v in value_tokens(s, layer, neurons, k=8, lens=reader)} if neurons else {}
    examples = [{"layer": layer, "neuron": n, "frequency": float(freq[best, n]),
                 "promoted": [t.token for t in vt[n].promoted],
                 "prefixes": [{"coefficient": e.coefficient, "offset": e.offset, "prefix": e.prefix,
                               "trigger": e.trigger, "next": e.next_token}
                              for e in index.examples(layer, n, corpus, n=3)]} for n in neurons]
    data = {
        "meta": meta(s),
        "lens_kind": args.lens,
        "corpus": {"name": corpus.name, "path": str(args.corpus), "tokens": len(corpus)},
        "harvest": {"layers": list(index.layers), "k": index.k, "window": index.window, "bos": index.bos,
                    "n_tokens": index.n_tokens, "seconds": seconds,
                    "tokens_per_second": index.n_tokens / max(seconds, 1e-9), "ray": ray_info or None},
        "index": str(out / "index"),
        "agreement": {"k_tokens": table.k_tokens, "prefixes": table.prefixes,
                      "top_memories": table.top_memories, "composition_tokens": table.composition_tokens,
                      "seconds": agree_s, "rows": rows},
        "keys": keys,
        "examples": examples,
    }
    write_json(out / "memories.json", data)
    rep = HtmlReport("FFN key-value memories",
                     f"model {s.name} · corpus {corpus.name} · {index.n_tokens} tokens · k={index.k}")
    rep.heading("Key-value agreement per layer")
    rep.text("Agreement: share of keys whose value's top promoted tokens contain the token that follows "
             "one of the key's top trigger prefixes; baseline: the same with each key paired to a random "
             "key's value; composition: share of tokens whose FFN output's top token is the top token of "
             "none of its strongest memories.")
    rep.figure(agreement_figure(rows))
    rep.table(rows)
    rep.heading(f"Example memories, layer {layer}")
    for ex in examples:
        rep.heading(f"L{layer} neuron {ex['neuron']} promotes: {' '.join(ex['promoted'])}", 3)
        rep.table([{"m": p["coefficient"], "prefix": p["prefix"][-80:], "trigger": p["trigger"],
                    "next": p["next"]} for p in ex["prefixes"]])
    rep.heading("Keys per layer")
    rep.table(keys)
    rep.save(out / "memories.html")
    print(f"{index.n_tokens} tokens in {seconds:.1f} s; agreement in {agree_s:.1f} s")
    for r in rows:
        comp = "-" if r["composition"] is None else f"{r['composition']:.3f}"
        print(f"layer {r['layer']:>3}: agreement {r['agreement']:.3f}  baseline {r['random_baseline']:.3f}"
              f"  composition {comp}")
    print(f"index: {out / 'index'}\njson: {out / 'memories.json'}\nhtml: {out / 'memories.html'}")
    return 0
