"""Sharded FFN memory harvest on Ray: two workers against one, same corpus, one run.

Compared against: the same harvest (`workbench.distributed.harvest_shard`: every layer's
``mlp_post``, every key's top-k prefixes, frequency and mean sums) on ONE Ray worker, on the
same tokens, in the same process. Each configuration is warmed up first (sessions loaded,
kernels run) and then timed end to end on the driver: shards dealt to workers, run, results
shipped back. The exact top-k merge on the driver is timed apart ("merge s"). The two merged
harvests must be identical (prefix for prefix); the JSON records it.

On CUDA each worker gets one GPU and a random-init model of SmolLM2-135M's shape in bf16
(`random-smollm2-135m`; weights do not matter for timing); on CPU, one core per worker and
the tiny test model. The corpus is the project's corpus, its token stream repeated to
--tokens tokens.

    python benches/scale_ray.py --device auto --tokens 4000000 [--out out/bench/scale_ray.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--model", default=None, help="worker model name (default: by device)")
    ap.add_argument("--tokens", type=int, default=None, help="corpus tokens (default: by device)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--tokens-per-batch", type=int, default=None)
    ap.add_argument("--shards-per-worker", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="the scaled-out configuration")
    ap.add_argument("--out", default="out/bench/scale_ray.json")
    args = ap.parse_args()

    from workbench.corpus import Corpus
    from workbench.distributed import RayConfig, WorkerModel, release_workers
    from workbench.distributed.harvest import harvest_shard, merge_harvests
    from workbench.distributed.jobs import run_sharded, shard_plan
    from workbench.testing import tiny_tokenizer

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    n_gpus = torch.cuda.device_count() if cuda else 0
    if cuda and n_gpus < args.workers:
        print(f"note: {n_gpus} GPU(s) visible; {args.workers} workers need {args.workers}")
    model = WorkerModel(args.model or ("random-smollm2-135m" if cuda else "tiny-llama"),
                        "bfloat16" if cuda else "float32", bos=False)
    tokens = args.tokens or (4_000_000 if cuda else 120_000)
    tpb = args.tokens_per_batch or (16384 if cuda else 2048)
    tok = tiny_tokenizer()
    base = Corpus.load(ROOT / "data" / "corpus" / "tiny_corpus.txt", tok).ids
    ids = base.repeat(-(-tokens // len(base)))[:tokens]
    corpus = Corpus(f"tiny_corpus x{tokens / len(base):.1f}", ids, tok)
    kw = dict(layers=None, k=args.k, window=args.window, tokens_per_batch=tpb)
    rows, results = [], {}
    for workers in (1, args.workers):
        cfg = (RayConfig(num_gpus=n_gpus, workers=workers, gpus_per_worker=1.0, cpus_per_worker=1)
               if cuda else RayConfig(num_cpus=max(2, workers), workers=workers,
                                      gpus_per_worker=0.0))
        release_workers()
        # warm-up: load every worker's session and run its kernels on a few batches
        warm = shard_plan(cfg, corpus, model, args.window, tpb, tpb * workers, 1)
        t0 = time.perf_counter()
        run_sharded(model, harvest_shard, corpus, cfg, warm,
                    {**kw, "max_tokens": tpb * workers})
        warm_s = time.perf_counter() - t0
        shards = shard_plan(cfg, corpus, model, args.window, tpb, None, args.shards_per_worker)
        t0 = time.perf_counter()
        parts, timing = run_sharded(model, harvest_shard, corpus, cfg, shards, kw)
        run_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        merged = merge_harvests(parts)
        merge_s = time.perf_counter() - t1
        n = merged["n"]
        results[workers] = merged
        rows.append({"workers": workers, "shards": len(shards), "tokens": n,
                     "harvest_s": run_s, "tokens_per_s": n / run_s, "merge_s": merge_s,
                     "warmup_s": warm_s, "shard_compute_s": timing["shard_seconds"],
                     "worker_pids": timing["workers"]})
    release_workers()
    one, many = rows[0], rows[1]
    speedup = many["tokens_per_s"] / one["tokens_per_s"]
    identical = bool(torch.equal(results[1]["keys"], results[args.workers]["keys"])
                     and torch.equal(results[1]["fires"], results[args.workers]["fires"]))
    print(f"harvest on Ray: model {model.name} ({model.dtype}), {'cuda' if cuda else 'cpu'}, "
          f"{n_gpus} GPU(s), corpus {one['tokens']} tokens, k={args.k}, all layers")
    print(f"{'workers':>7} {'shards':>6} {'harvest s':>10} {'tok/s':>12} {'merge s':>8} "
          f"{'warm-up s':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['shards']:>6} {r['harvest_s']:>10.2f} "
              f"{r['tokens_per_s']:>12,.0f} {r['merge_s']:>8.3f} {r['warmup_s']:>9.1f}")
    print(f"speed-up {args.workers} workers / 1 worker: {speedup:.2f}x (goal 1.8x); "
          f"merged harvests identical: {identical}")
    out = {"bench": "scale", "compared_against": "the same harvest on one Ray worker",
           "device": "cuda" if cuda else "cpu", "gpus": n_gpus,
           "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
           "model": model.name, "dtype": model.dtype, "k": args.k, "window": args.window,
           "tokens_per_batch": tpb, "rows": rows, "speedup": speedup, "goal": 1.8,
           "identical": identical}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"json: {path}")
    import ray

    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
