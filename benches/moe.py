"""Sparse expert forward (MoEfication) against the dense FFN of the same layer.

Compared against: the model's own dense FFN module (`hf_model.model.layers[L].mlp`, all units)
on the same tokens. The sparse path (`workbench.moe_sparse.ExpertFFN.sparse`) computes, for each
expert, only the tokens routed to it (gather rows, gated MLP on the expert's units, scatter-add),
keeping each token's top-k of E experts chosen by the similarity router (routing is outside the
timed region on both sides). Reported: milliseconds per call (median of --repeats), the ratio
dense / sparse (> 1: the sparse forward is faster) per share of experts, and the largest
difference from the dense FFN with the unchosen units zeroed (must be at rounding level).

Model: `workbench.testing.random_session` (random-init weights of the --shape model; bf16 on
CUDA, fp32 on CPU unless --dtype); the partition is balanced KMeans of the layer's keys
(--partition random: equal-size random experts, for large shapes). Inputs: random vectors.

Writes JSON (--out, default out/bench/moe-<device>.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from workbench.moe_quality import k_for_share
from workbench.moe_routing import make_partitions, similarity_router
from workbench.moe_sparse import time_sparse_ffn
from workbench.session import resolve_device
from workbench.testing import random_session


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--shape", default="smollm2-135m", help="random_session shape")
    p.add_argument("--experts", type=int, default=48)
    p.add_argument("--shares", default="0.1,0.25,0.5,1.0")
    p.add_argument("--tokens", default=None, help="comma list of token counts (default 4096,65536 GPU; 2048 CPU)")
    p.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    p.add_argument("--partition", default="balanced", choices=("balanced", "random"))
    p.add_argument("--repeats", type=int, default=None, help="default 50 GPU, 5 CPU")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if gpu else torch.float32)
    tokens = [int(x) for x in (args.tokens or ("4096,65536" if gpu else "2048")).split(",")]
    shares = [float(x) for x in args.shares.split(",")]
    repeats = args.repeats or (50 if gpu else 5)
    t0 = time.perf_counter()
    s = random_session(args.shape, device=str(dev), dtype=dtype)
    layer = s.n_layers // 2 if args.layer is None else s.check_layer(args.layer)
    part = make_partitions(s, args.experts, [layer], args.partition)[0]
    router = similarity_router(s, part)
    setup_s = time.perf_counter() - t0
    rows = []
    for n in tokens:
        for share in shares:
            t = time_sparse_ffn(s, router, k_for_share(share, args.experts), n_tokens=n, repeats=repeats)
            rows.append({"share": share, **t.to_dict(), "ratio": t.speedup})
    out = {"bench": "moe", "compared_against": "the dense FFN module of the same layer on the same tokens",
           "device": torch.cuda.get_device_name(dev) if gpu else platform.processor() or "cpu",
           "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
           "python": sys.version.split()[0], "model": s.name, "shape": args.shape, "layer": layer,
           "d_model": s.d_model, "d_mlp": s.d_mlp, "experts": args.experts, "partition": args.partition,
           "repeats": repeats, "setup_seconds": setup_s, "rows": rows}
    path = Path(args.out or f"out/bench/moe-{dev.type}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"device {out['device']} ({out['dtype']}), {args.shape} layer {layer}, d_mlp {s.d_mlp}, "
          f"{args.experts} experts ({args.partition}), median of {repeats}")
    print(f"{'tokens':>7} {'share':>6} {'k':>4} {'dense ms':>10} {'sparse ms':>10} {'grouped ms':>10} "
          f"{'ratio':>7} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['n_tokens']:>7} {r['share']:>6.2f} {r['k']:>4} {r['dense_ms']:>10.3f} {r['sparse_ms']:>10.3f} "
              f"{r['grouped_ms']:>10.3f} {r['ratio']:>7.2f} {r['max_abs_diff']:>10.2e}")
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
