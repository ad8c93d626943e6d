"""Bench: seconds per ROME edit with cached key statistics vs seconds for the statistics.

Compared against: computing C = E[k k^T] over the corpus (what a cache hit saves), in the same
process. Also times apply + undo. Goal: an edit under 2 s on GPU. On GPU it uses
`random_session` (random weights of the SmolLM2 shape, bf16); on CPU the real model when it
loads, else the random one.

    python benches/edit.py --device auto [--stats-tokens 20000] [--edits 3] [--out out/bench/edit.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from workbench.testing import sync, timing_session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--stats-tokens", type=int, default=20_000)
    ap.add_argument("--edits", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--corpus", default="data/corpus/tiny_corpus.txt")
    ap.add_argument("--out", default="out/bench/edit.json")
    args = ap.parse_args(argv)
    from editing import (
        EditRequest,
        RomeConfig,
        apply,
        compute_rome_update,
        context_prefixes,
        key_stats,
    )
    from workbench.corpus import Corpus

    session, what = timing_session(args.device)
    corpus = Corpus.load(args.corpus, session.tokenizer, max_tokens=args.stats_tokens * 2)
    cache = tempfile.mkdtemp(prefix="wb-cov-")
    sync(session)
    t0 = time.perf_counter()
    stats = key_stats(session, args.layer, corpus, n_tokens=args.stats_tokens, directory=cache,
                      progress=False)
    sync(session)
    stats_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    key_stats(session, args.layer, corpus, n_tokens=args.stats_tokens, directory=cache, progress=False)
    cached_s = time.perf_counter() - t0
    cfg = RomeConfig(steps=args.steps, stop_nll=0.0)      # fixed step count: comparable timings
    t0 = time.perf_counter()
    context_prefixes(session, cfg)                          # once per session
    prefix_s = time.perf_counter() - t0
    # targets that are one token for the real tokenizer and for the tiny one of random_session
    reqs = [EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "France"),
            EditRequest("Rome is the capital of", "Rome", "France"),
            EditRequest("Alice plays the piano and Bob plays", "Bob", "chess")]
    times, apply_times = [], []
    for i in range(args.edits):
        sync(session)
        t0 = time.perf_counter()
        up = compute_rome_update(session, reqs[i % len(reqs)], stats, cfg)
        sync(session)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with apply(session, up):
            pass
        sync(session)
        apply_times.append(time.perf_counter() - t0)
    edit_s = statistics.median(times)
    rows = [{"what": "key statistics (uncached)", "seconds": stats_s},
            {"what": "key statistics (cache hit)", "seconds": cached_s},
            {"what": "context prefixes (once per session)", "seconds": prefix_s},
            {"what": f"edit with cached stats ({args.steps} steps, median)", "seconds": edit_s},
            {"what": "apply + undo (median)", "seconds": statistics.median(apply_times)}]
    print(f"ROME edit on {what}, {session.device}, layer {args.layer}, "
          f"{stats.n_tokens} tokens for C")
    print(f"{'what':48s} {'seconds':>10s}")
    for r in rows:
        print(f"{r['what']:48s} {r['seconds']:10.3f}")
    print(f"statistics / edit: {stats_s / edit_s:.1f}x; seconds per v* step: {edit_s / args.steps:.3f}; "
          f"edit under 2 s: {edit_s < 2}")
    out = {"bench": "edit", "model": what, "device": str(session.device), "layer": args.layer,
           "stats_tokens": stats.n_tokens, "rows": rows, "edit_seconds": edit_s,
           "stats_seconds": stats_s, "ratio_stats_over_edit": stats_s / edit_s,
           "edit_times": times, "seconds_per_step": edit_s / args.steps, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
