"""Bench: the z* targets of MEMIT / AlphaEdit, one chunk with and without dropping stopped rows.

Compared against: the same chunk's optimisation with every row run at every step (`compact=False`,
how z* ran before session 19), in the same process, on the same requests. A request stops once
its target NLL is under `stop_nll`; requests stop at different steps, so a chunk run to its
slowest request wastes the forward and backward of the stopped ones. Reports seconds per
request, both ways, their ratio, the mean and max steps, and the largest difference between the
two runs' targets (0 up to float summation order).

Requests: CounterFact-format cases (default: the project's own model-verified cases,
data/labels/counterfact_smollm2.json) on the embedded SmolLM2-135M.

    python benches/zstar.py [--device auto] [--n 32] [--chunk 32] [--stop-nll 0.3] [--cases FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--cases", default=str(ROOT / "data" / "labels" / "counterfact_smollm2.json"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--stop-nll", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layer", type=int, default=5, help="the layer of the targets (MEMIT's last edited layer)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from editing import EditRequest, MemitConfig, load_counterfact, usable_cases
    from editing._hf import pure_lm, trunk_layer
    from editing.memit import request_prompts
    from editing.zstar import _chunk_targets
    from workbench import Session
    from workbench.testing import sync

    s = Session.load(args.model, device=args.device, dtype="float32")
    cases = usable_cases(s, load_counterfact(args.cases))[0][: args.n]
    if len(cases) < args.n:
        print(f"note: {len(cases)} usable cases in {args.cases}", file=sys.stderr)
    reqs = [EditRequest(c.prompt, c.subject, c.target_new) for c in cases]
    cfg = MemitConfig(layers=(args.layer,), steps=args.steps, prefixes_per_length=3, stop_nll=args.stop_nll,
                      chunk=args.chunk)
    tids, prompts, ess = request_prompts(s, reqs, cfg)
    block = trunk_layer(pure_lm(s), args.layer)
    got = {}
    for compact in (True, False):
        t0 = time.perf_counter()
        zs, steps = [], []
        for lo in range(0, len(reqs), args.chunk):
            sl = slice(lo, lo + args.chunk)
            z, _, _, st = _chunk_targets(s, block, prompts[sl], ess[sl], tids[sl], cfg, compact=compact)
            zs.append(z)
            steps += st
        sync(s)
        got[compact] = (time.perf_counter() - t0, torch.cat(zs), steps)
    (t_new, z_new, st_new), (t_old, z_old, st_old) = got[True], got[False]
    row = {"device": str(s.device), "n": len(reqs), "chunk": args.chunk, "stop_nll": args.stop_nll,
           "steps": args.steps, "mean_steps": sum(st_new) / len(st_new), "max_steps": max(st_new),
           "s_per_request_compact": t_new / len(reqs), "s_per_request_all_rows": t_old / len(reqs),
           "ratio": t_old / t_new, "max_abs_dz": float((z_new - z_old).abs().max()),
           "max_abs_z": float(z_old.abs().max()), "same_steps": st_new == st_old}
    print(f"z* of {row['n']} requests, chunk {args.chunk}, stop NLL {args.stop_nll} on {row['device']}: "
          f"{row['s_per_request_compact']:.3f} s per request with stopped rows dropped, "
          f"{row['s_per_request_all_rows']:.3f} s with every row every step: x{row['ratio']:.2f}; "
          f"steps mean {row['mean_steps']:.1f}, max {row['max_steps']}; max |dz| {row['max_abs_dz']:.1e} "
          f"(|z| up to {row['max_abs_z']:.0f}), same steps {row['same_steps']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
