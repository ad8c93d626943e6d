"""SAE training throughput against the raw forward pass that produces its activations.

Compared in one process: (a) the limit: `capture_tokens` of the SAE's site over corpus
windows (the forward stops after the site's layer), tokens/s; (b) `train_sae` over the same
number of tokens (harvest + SAE steps, streamed, nothing on disk), tokens/s. Ratio = b / a
(goal >= 0.7). Model: `random_session` (random-init SmolLM2-135M shape; bf16 on CUDA, fp32 on
CPU), or `--shape tiny` for a quick CPU check. Corpus: random token ids (timing does not
depend on the text). SAE: TopK, 16 x d_model latents, k=64, at resid_post of the middle layer.
SAELens is not installed beside us (no network on the GPU machine): not measured.

    python benches/sae.py --device auto --tokens 2000000 --out out/bench/sae.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from workbench import Corpus, parse_site
from workbench.saes import SAEConfig, TrainConfig, train_sae
from workbench.saes.stream import stream_vectors, window_order
from workbench.session import resolve_device
from workbench.testing import random_session, tiny_session

GOAL = 0.7


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shape", default="smollm2-135m", choices=["smollm2-135m", "tiny"])
    ap.add_argument("--tokens", type=int, default=None, help="tokens per measurement")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--tokens-per-forward", type=int, default=None)
    ap.add_argument("--width", type=int, default=None, help="SAE latents (default 16 d_model)")
    ap.add_argument("--sparse", choices=["auto", "on", "off"], default="auto",
                    help="TrainConfig.sparse_step (auto: CPU, or CUDA from 32,768 latents)")
    ap.add_argument("--out", default="out/bench/sae.json")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    cuda = dev.type == "cuda"
    if a.shape == "tiny":
        s = tiny_session(device=str(dev))
    else:
        s = random_session(device=str(dev), dtype=torch.bfloat16 if cuda else torch.float32)
    tokens = a.tokens or (4_000_000 if cuda else 40_000)
    tpf = a.tokens_per_forward or (65536 if cuda else 4096)
    layer = s.n_layers // 2
    site = f"resid_post:{layer}"
    g = torch.Generator().manual_seed(0)
    corpus = Corpus("random", torch.randint(10, len(s.tokenizer), (tokens * 2 + 100_000,), generator=g),
                    s.tokenizer)
    scfg = SAEConfig("topk", s.d_model, a.width or 16 * s.d_model, site=site, k=64)
    tcfg = TrainConfig(total_tokens=tokens, batch_size=a.batch_size, window=a.window,
                       tokens_per_forward=tpf, buffer_tokens=max(8 * a.batch_size, tpf * 2),
                       eval_tokens=0, warmup_steps=10, dead_after_tokens=tokens // 4,
                       sparse_step={"auto": None, "on": True, "off": False}[a.sparse])
    # warm-up (kernels, allocator) for both paths
    starts = window_order(corpus, s, a.window, 1)
    for _ in stream_vectors(s, corpus, parse_site(site), None,
                            starts[: max(1, tpf // a.window) * 2], a.window, tpf, True):
        pass
    train_sae(s, corpus, scfg, TrainConfig(**{**tcfg.to_dict(), "total_tokens": a.batch_size * 20}),
              progress=False)
    # (a) raw forward producing the activations
    n_win = tokens // (a.window - 1) + 1
    st = window_order(corpus, s, a.window, 0)[:n_win]

    _sync(dev)
    t0 = time.perf_counter()
    n = 0
    for x in stream_vectors(s, corpus, parse_site(site), None, st, a.window, tpf, True):
        n += len(x)
    _sync(dev)
    raw_s = time.perf_counter() - t0
    raw_tps = n / raw_s
    # (b) streamed training over the same number of tokens
    _sync(dev)
    t0 = time.perf_counter()
    res = train_sae(s, corpus, scfg, tcfg, progress=False)
    _sync(dev)
    tr_s = time.perf_counter() - t0
    tr_tps = res.tokens / tr_s
    ratio = tr_tps / raw_tps
    out = {"bench": "sae", "device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
           "torch": torch.__version__, "shape": a.shape, "site": site, "d_sae": scfg.d_sae, "k": scfg.k,
           "sparse_step": a.sparse,
           "dtype_model": str(s.dtype), "amp": tcfg.amp and cuda, "batch_size": a.batch_size,
           "window": a.window, "tokens_per_forward": tpf,
           "raw_forward": {"tokens": n, "seconds": raw_s, "tokens_per_s": raw_tps},
           "train": {"tokens": res.tokens, "seconds": tr_s, "tokens_per_s": tr_tps,
                     "final_batch_fvu": res.history[-1]["fvu"] if res.history else None},
           "ratio_train_over_forward": ratio, "goal": GOAL, "meets_goal": ratio >= GOAL,
           "saelens": "not measured (not installable on the GPU machine: no network)"}
    print(f"{'what':<28}{'tokens':>10}{'seconds':>10}{'tokens/s':>14}")
    print(f"{'raw forward (capture)':<28}{n:>10}{raw_s:>10.2f}{raw_tps:>14,.0f}")
    print(f"{'SAE training (streamed)':<28}{res.tokens:>10}{tr_s:>10.2f}{tr_tps:>14,.0f}")
    print(f"ratio train/forward = {ratio:.2f} (goal >= {GOAL})")
    p = Path(a.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=2))
    print(f"json: {p}")
    return out


if __name__ == "__main__":
    main()
