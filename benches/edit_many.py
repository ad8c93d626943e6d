"""Bench: many edits at once. MEMIT batches of N requests vs ROME applied one request at a time.

Compared against: ROME on the same requests one at a time (timed on --rome-edits requests and
extrapolated linearly to N), in the same process. Also times the covariance statistics of the
MEMIT layers (one corpus pass; goal under 10 s per layer on the GPU) and apply + undo of the
batch. Goals (issue 15): 10,000 MEMIT edits under 5 minutes on the GPU, no out-of-memory.

Requests are synthetic and distinct ("Person 17 lives in the city of" -> " Paris"), which the
random-init weights of the GPU run cannot tell from real facts; the work per request (z*
optimisation, keys, the solve) is the same.

    python benches/edit_many.py --device auto [--sizes 100,1000,10000] [--out out/bench/edit_many.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workbench.testing import sync, timing_session

CITIES = (" Paris", " Rome", " Berlin", " Madrid", " Tokyo", " Cairo", " Moscow", " Lima")
RELATIONS = ("{} lives in the city of", "{} was born in the city of", "{} works in the city of")


def requests(n: int):
    from editing import EditRequest

    out = []
    for i in range(n):
        subject = f"Person {i}"
        out.append(EditRequest(RELATIONS[i % len(RELATIONS)].format(subject), subject,
                               CITIES[(i * 7) % len(CITIES)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--layers", default="3,4,5,6,7")
    ap.add_argument("--rome-edits", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=None,
                    help="requests whose z* are optimised together (default: 256 on CUDA, 16 on CPU)")
    ap.add_argument("--stats-tokens", type=int, default=100_000)
    ap.add_argument("--corpus", default="data/corpus/natural")
    ap.add_argument("--out", default="out/bench/edit_many.json")
    args = ap.parse_args(argv)
    from editing import (
        MemitConfig,
        RomeConfig,
        apply,
        compute_memit_update,
        compute_rome_update,
        layers_key_stats,
    )
    from workbench.corpus import Corpus

    session, what = timing_session(args.device)
    layers = [int(x) for x in args.layers.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    corpus = Corpus.load(args.corpus, session.tokenizer, max_tokens=args.stats_tokens + 8192)
    n_tok = min(args.stats_tokens, len(corpus) - 128)
    sync(session)
    t0 = time.perf_counter()
    stats = layers_key_stats(session, layers, corpus, n_tokens=n_tok, use_cache=False, progress=False)
    sync(session)
    stats_s = time.perf_counter() - t0
    rows = [{"what": f"covariance of {len(layers)} layers ({stats[layers[0]].n_tokens} tokens, one pass)",
             "seconds": stats_s, "per_layer": stats_s / len(layers)}]
    print(f"edits on {what}, {session.device}, layers {layers}")
    print(f"covariance: {stats_s:.2f} s ({stats_s / len(layers):.2f} s per layer)")

    rcfg = RomeConfig(steps=args.steps, stop_nll=0.0, prefixes_per_length=1)
    rome_t = []
    for req in requests(args.rome_edits):
        sync(session)
        t0 = time.perf_counter()
        compute_rome_update(session, req, stats[layers[len(layers) // 2]], rcfg)
        sync(session)
        rome_t.append(time.perf_counter() - t0)
    rome_each = sorted(rome_t)[len(rome_t) // 2]
    print(f"ROME one at a time: {rome_each:.2f} s per request (median of {len(rome_t)})")

    chunk = args.chunk or (256 if session.device.type == "cuda" else 16)
    mcfg = MemitConfig(layers=tuple(layers), steps=args.steps, stop_nll=0.0, prefixes_per_length=1,
                       chunk=chunk)
    before = {n: p.detach().clone() for n, p in session.hf_model.named_parameters() if "down_proj" in n}
    for n in sizes:
        reqs = requests(n)
        if session.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row = {"edits": n}
        try:
            sync(session)
            t0 = time.perf_counter()
            up = compute_memit_update(session, reqs, stats, mcfg)
            sync(session)
            row["memit_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with apply(session, up):
                sync(session)
            row["apply_undo_seconds"] = time.perf_counter() - t0
            row["rome_one_at_a_time_seconds (extrap.)"] = rome_each * n
            row["ratio"] = rome_each * n / row["memit_seconds"]
            row["restored_bitwise"] = all(torch.equal(p, before[k]) for k, p in
                                          session.hf_model.named_parameters() if k in before)
        except torch.cuda.OutOfMemoryError as exc:
            row["error"] = f"out of memory: {exc}"[:200]
        if session.device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        print(json.dumps(row))
    out = {"bench": "edit_many", "model": what, "device": str(session.device), "layers": layers,
           "steps": args.steps, "rome_seconds_per_request": rome_each, "rows": rows,
           "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
