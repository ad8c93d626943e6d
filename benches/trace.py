"""Bench: batched causal trace vs one forward pass per (layer, token) cell, on the same fact.

Compared against: the reference method's loop (one forward pass per cell, the noise samples as
the batch), run by the same code with ``rows_per_batch = samples``; both grids must agree.
On GPU it uses `random_session` (random weights of the SmolLM2 shape), on CPU the real model
when it loads, else the random one.

    python benches/trace.py --device auto [--samples 10] [--kinds mlp] [--out out/bench/trace.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workbench.testing import sync, timing_session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--kinds", default="mlp")
    ap.add_argument("--out", default="out/bench/trace.json")
    args = ap.parse_args(argv)
    from editing import TraceConfig, trace_fact

    session, what = timing_session(args.device)
    prompt, subject = "The Eiffel Tower is located in the city of", "The Eiffel Tower"
    kinds = tuple(args.kinds.split(","))
    base = TraceConfig(kinds=kinds, samples=args.samples)
    loop = TraceConfig(kinds=kinds, samples=args.samples, rows_per_batch=args.samples)
    trace_fact(session, prompt, subject, 0.1, config=TraceConfig(kinds=("resid",), samples=1))  # warm-up
    rows = []
    res = {}
    for name, cfg in (("batched", base), ("loop (one pass per cell)", loop)):
        sync(session)
        t0 = time.perf_counter()
        res[name] = trace_fact(session, prompt, subject, 0.1, config=cfg)
        sync(session)
        rows.append({"method": name, "seconds": time.perf_counter() - t0})
    diff = max(float((res["batched"].scores[k] - res["loop (one pass per cell)"].scores[k]).abs().max())
               for k in kinds)
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    cells = session.n_layers * len(res["batched"].str_tokens)
    print(f"causal trace on {what}, {session.device}: {cells} cells x {len(kinds)} kind(s) x "
          f"{args.samples} samples")
    print(f"{'method':28s} {'seconds':>10s}")
    for r in rows:
        print(f"{r['method']:28s} {r['seconds']:10.3f}")
    print(f"speed-up batched vs loop: {ratio:.1f}x (goal >= 10x); max |grid difference| {diff:.2e}")
    out = {"bench": "trace", "model": what, "device": str(session.device), "cells": cells,
           "kinds": list(kinds), "samples": args.samples, "rows": rows, "ratio": ratio,
           "max_abs_diff": diff, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
