"""Harvest throughput: the full FFN memory harvest against the session's own bare capture.

Compared against: `capture_tokens` of the same sites (``mlp_post`` of every layer) on the same
corpus batches, with nothing done to the activations ("bare capture"). The harvest
(`workbench.memories.harvest`, all layers, all keys, top-k per key merged on the device, plus
activation frequency and mean) should run at 0.8x of bare capture or better: merging is never
the bottleneck. Both run in this process, same batches, after a warm-up batch.

Model: `workbench.testing.random_session` (random-init SmolLM2-135M shape; bf16 on CUDA,
fp32 on CPU unless --dtype). Corpus: random token ids (timing does not depend on them).
Share of peak: model FLOPs per token (2 * N_nonemb + 2 * n_layers * T * d_model, causal
attention over a T-token window; the unembed is not counted) times tokens/s, over the median
time of a large matmul in the session dtype. Backends: ``generic`` (the bridge) and, with
``--backends generic,compiled``, the foundation's compiled throughput path for both rows.

Writes JSON (--out, default out/bench/harvest-<device>.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from workbench.capture import capture_tokens
from workbench.corpus import Corpus
from workbench.hooks import Site
from workbench.memories import harvest
from workbench.session import TokenBatch, resolve_device
from workbench.testing import random_session

GOAL_RATIO = 0.8


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_flops(dev, dtype) -> float:
    n = 8192 if dev.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(dev)
    times = []
    for _ in range(10 if dev.type == "cuda" else 3):
        t = time.perf_counter()
        a @ b
        sync(dev)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def flops_per_token(s, window: int) -> float:
    n_non = sum(p.numel() for n, p in s.hf_model.named_parameters() if "embed" not in n and "lm_head" not in n)
    return 2 * n_non + 2 * s.n_layers * window * s.d_model


def bare(s, corpus, sites, args, backend) -> tuple[float, int]:
    """Seconds and tokens of capture_tokens over the corpus batches, results dropped."""
    dev = s.device
    n = 0
    sync(dev)
    t = time.perf_counter()
    for wb in corpus.batches(s, window=args.window, tokens_per_batch=args.tokens_per_batch,
                             max_tokens=args.tokens, progress=False):
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
        cap = capture_tokens(s, TokenBatch(wb.tokens, lengths), sites, backend=backend)
        n += cap[sites[-1]].shape[0] * (cap[sites[-1]].shape[1] - int(wb.bos))
        del cap
    sync(dev)
    return time.perf_counter() - t, n


def full_harvest(s, corpus, args, backend) -> tuple[float, int]:
    sync(s.device)
    t = time.perf_counter()
    idx = harvest(s, corpus, k=args.k, window=args.window, tokens_per_batch=args.tokens_per_batch,
                  max_tokens=args.tokens, context=0, backend=backend, progress=False)
    sync(s.device)
    return time.perf_counter() - t, idx.n_tokens


def exact_check(s, corpus, args) -> dict:
    """Harvest of 2 batches (streamed) vs a full sort of every coefficient: must be identical."""
    from workbench.memories import pack_keys, unpack_keys

    n = 2 * args.tokens_per_batch
    idx = harvest(s, corpus, layers=[0, s.n_layers - 1], k=args.k, window=args.window,
                  tokens_per_batch=args.tokens_per_batch // 2, max_tokens=n, context=0, progress=False)
    ok = []
    for j, layer in enumerate(idx.layers):
        ms, offs = [], []
        for wb in corpus.batches(s, window=args.window, tokens_per_batch=n, max_tokens=n, progress=False):
            lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
            cap = capture_tokens(s, TokenBatch(wb.tokens, lengths), [Site("mlp_post", layer)])
            b0 = int(wb.bos)
            ms.append(cap[Site("mlp_post", layer)][:, b0:].reshape(-1, s.d_mlp))
            offs.append(wb.offsets()[:, b0:].reshape(-1))
        keys = pack_keys(torch.cat(ms).float().T, torch.cat(offs)[None]).sort(dim=1, descending=True).values
        v, o = unpack_keys(keys[:, : args.k])
        ok.append(bool(torch.equal(v.cpu(), idx.values[j]) and torch.equal(o.cpu(), idx.offsets[j])))
    return {"layers": list(idx.layers), "tokens": idx.n_tokens, "identical": ok}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--tokens", type=int, default=None, help="tokens per run (default 262144 GPU, 4096 CPU)")
    p.add_argument("--tokens-per-batch", type=int, default=None, help="default 16384 GPU, 1024 CPU")
    p.add_argument("--window", type=int, default=None, help="default 256 GPU, 64 CPU")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--backends", default="generic")
    p.add_argument("--out", default=None)
    p.add_argument("--no-check", action="store_true", help="skip the exactness check vs a full sort")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if gpu else torch.float32)
    args.tokens = args.tokens or (262144 if gpu else 4096)
    args.tokens_per_batch = args.tokens_per_batch or (16384 if gpu else 1024)
    args.window = args.window or (256 if gpu else 64)
    s = random_session(device=str(dev), dtype=dtype)
    corpus = Corpus("random-ids", torch.randint(0, s.d_vocab, (args.tokens + args.window,),
                                                generator=torch.Generator().manual_seed(0)), s.tokenizer)
    sites = [Site("mlp_post", layer) for layer in range(s.n_layers)]
    peak = peak_flops(dev, dtype)
    fpt = flops_per_token(s, args.window)
    check = None if args.no_check else exact_check(s, corpus, args)
    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        # two batches: the first takes the full top-k path, the second the threshold merge
        # (on CUDA its fused statistics compile then, once per process, like the capture)
        warm = argparse.Namespace(**{**vars(args), "tokens": 2 * args.tokens_per_batch})
        t0 = time.perf_counter()
        bare(s, corpus, sites, warm, backend)
        full_harvest(s, corpus, warm, backend)
        warm_s = time.perf_counter() - t0
        b_t, h_t = [], []
        for _ in range(args.reps):  # interleaved, so drift in machine load hits both
            tb, nb = bare(s, corpus, sites, args, backend)
            th, nh = full_harvest(s, corpus, args, backend)
            assert nb == nh, (nb, nh)
            b_t.append(tb)
            h_t.append(th)
        for name, ts in (("bare capture", b_t), ("harvest (top-k + stats)", h_t)):
            sec = statistics.median(ts)
            rows.append({"backend": backend, "path": name, "tokens": nh, "seconds": sec,
                         "tokens_per_second": nh / sec, "share_of_peak": nh / sec * fpt / peak,
                         "all_seconds": ts})
        rows[-1]["ratio_vs_bare"] = statistics.median(b_t) / statistics.median(h_t)
        rows[-1]["warmup_seconds"] = warm_s
    out = {"bench": "harvest", "compared_against": "bare capture_tokens of the same mlp_post sites, same batches",
           "device": torch.cuda.get_device_name(dev) if gpu else platform.processor() or "cpu",
           "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "python": sys.version.split()[0],
           "model": s.name, "n_layers": s.n_layers, "d_mlp": s.d_mlp, "k": args.k, "window": args.window,
           "tokens_per_batch": args.tokens_per_batch, "peak_flops": peak, "flops_per_token": fpt,
           "goal_ratio": GOAL_RATIO, "exact_check": check, "rows": rows}
    path = Path(args.out or f"out/bench/harvest-{dev.type}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"device {out['device']} ({out['dtype']}), peak {peak / 1e12:.2f} TFLOP/s, "
          f"{fpt / 1e6:.1f} MFLOP/token, k={args.k}, window={args.window}, batch {args.tokens_per_batch} tokens")
    print(f"{'backend':<10} {'path':<26} {'tokens':>8} {'tok/s':>12} {'% peak':>7} {'ratio':>6}")
    for r in rows:
        ratio = f"{r['ratio_vs_bare']:.2f}" if "ratio_vs_bare" in r else ""
        print(f"{r['backend']:<10} {r['path']:<26} {r['tokens']:>8} {r['tokens_per_second']:>12.1f} "
              f"{100 * r['share_of_peak']:>6.2f}% {ratio:>6}")
    if check:
        print(f"exactness vs a full sort ({check['tokens']} tokens, layers {check['layers']}): {check['identical']}")
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
