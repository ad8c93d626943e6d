"""Where SAE training's time goes in the loop: `train_sae` on a random-init model of a real shape,
profiled with the activation stream included, against the stream alone.

benches/sae_step.py times the optimiser step on random activations; benches/scale.py times the
whole loop. On an H200 at the Llama-3.1-8B shape they disagree (docs/GPU.md, session 16): the
compiled step is 31% faster alone and no faster in the loop. This bench splits the loop.

Compared against: the raw activation stream (`stream_vectors` over the same windows, no SAE),
timed in the same process. Prints both rates, the ratio and the milliseconds per batch of each,
then torch.profiler's table of one more training run (CUDA time on a GPU, CPU time otherwise).

    python benches/sae_loop.py --shape llama3.1-8b --d-sae 65536,131072 --steps dense,sparse [--profile]

One line per (d_sae, step) pair, all on one loaded model; steps: dense (eager), compiled (the
dense step under torch.compile), sparse (`topk_sparse`: Triton decode on CUDA, the gradients
summed inside the Adam update by `pick_adam`), sparse-torch (the same step with the gradients
written out, then torch's fused Adam and the decoder-row kernels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workbench.saes.train as train_module  # noqa: E402
from benches.scale import measure, sync  # noqa: E402
from workbench import Corpus  # noqa: E402
from workbench.hooks import parse_site  # noqa: E402
from workbench.saes import SAEConfig, TrainConfig, train_sae  # noqa: E402
from workbench.saes.stream import stream_vectors, window_order  # noqa: E402
from workbench.session import resolve_device  # noqa: E402
from workbench.testing import random_session  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default=None, help="workbench.testing.SHAPES (default: llama3.1-8b "
                    "on CUDA, smollm2-135m on the CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--d-sae", default=None, help="comma list (default 16 d_model)")
    ap.add_argument("--tokens", type=int, default=None, help="training tokens of the timed run")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--dead-after", type=int, default=None,
                    help="dead_after_tokens (default: tokens // 4, so AuxK runs, as in scale.py)")
    ap.add_argument("--steps", default="dense,sparse", help="comma list of dense, compiled, sparse, sparse-torch")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of each training run")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    cuda = dev.type == "cuda"
    shape = a.shape or ("llama3.1-8b" if cuda else "smollm2-135m")
    tokens = a.tokens or (65536 if cuda else 4096)
    batch = min(a.batch, tokens)
    s = random_session(shape, device=str(dev), dtype=torch.bfloat16 if cuda else torch.float32)
    widths = [int(v) for v in a.d_sae.split(",")] if a.d_sae else [16 * s.d_model]
    steps = a.steps.split(",")
    bad = [v for v in steps if v not in ("dense", "compiled", "sparse", "sparse-torch")]
    if bad:
        ap.error(f"--steps {bad}: choose from dense, compiled, sparse, sparse-torch")
    g = torch.Generator().manual_seed(0)
    corpus = Corpus("random", torch.randint(3, min(s.d_vocab, 32000), (4 * tokens + 8192,), generator=g),
                    s.tokenizer)
    site = f"resid_post:{s.n_layers // 2}"
    base = TrainConfig(total_tokens=tokens, batch_size=batch, eval_tokens=0, warmup_steps=2,
                       buffer_tokens=max(4 * batch, 8192), dead_after_tokens=a.dead_after or max(1, tokens // 4))
    starts = window_order(corpus, s, base.window, 0)[: tokens // (base.window - 1) + 1]

    def stream() -> int:
        return sum(len(x) for x in stream_vectors(s, corpus, parse_site(site), None, starts, base.window,
                                                  base.tokens_per_forward, True))

    sec_stream, _, n = measure(dev, stream, warmup=2)   # warm: the compiled capture's shapes
    print(f"{shape} batch {batch}: stream {n / sec_stream:,.0f} tok/s ({batch / n * sec_stream * 1e3:.1f} ms "
          f"per {batch} tokens)", flush=True)
    for d_sae in widths:
        scfg = SAEConfig("topk", s.d_model, d_sae, site=site, k=64)
        for kind in steps:
            tcfg = TrainConfig(**{**base.to_dict(), "compile_step": kind == "compiled",
                                  "sparse_step": kind.startswith("sparse")})
            train_module.PICK_ADAM = kind != "sparse-torch"

            def train(cfg=tcfg, sc=scfg):
                return train_sae(s, corpus, sc, cfg, progress=False)

            train_sae(s, corpus, scfg, TrainConfig(**{**tcfg.to_dict(), "total_tokens": 4 * batch,
                                                      "dead_after_tokens": batch}), progress=False)  # warm
            sec_train, _, res = measure(dev, train)
            print(f"d_sae {d_sae} {kind}: training {res.tokens / sec_train:,.0f} tok/s, ratio to the stream "
                  f"{res.tokens / sec_train / (n / sec_stream):.2f}; loop {batch / res.tokens * sec_train * 1e3:.1f} "
                  f"ms per {batch} tokens; fvu {res.history[-1]['fvu']:.3f}, dead {res.history[-1]['dead']}",
                  flush=True)
            del res
            if cuda:
                torch.cuda.empty_cache()
            if a.profile:
                from torch.profiler import ProfilerActivity, profile, record_function

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                with profile(activities=acts) as prof:
                    with record_function("train_sae"):
                        train()
                    sync(dev)
                key = "cuda_time_total" if cuda else "cpu_time_total"
                print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
