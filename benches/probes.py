"""Bench: linear probe training over all layers of the default model on 20k corpus tokens.

Goal (issue 7): training the probes of every layer (task + Hewitt & Liang control, 30 layers of
SmolLM2-135M, resid_post, 20k tokens) finishes within two minutes on 2 CPU cores.

Compared against, in one process on the same activations:
  - the 120 s budget (ratio = time / budget),
  - cold-start logistic probes (each layer fitted from zero) vs warm-started ones (each layer
    starts from the previous layer's solution, what `probes.linear.probe_layers` does),
  - closed-form ridge probes.
The forward pass that captures the activations is timed separately (it is not probe training).

    python benches/probes.py [--device auto] [--tokens 20000] [--out out/bench/probes.json]

On CUDA the weights are random (`workbench.testing.random_session`, real SmolLM2 shape); the
probes still train on CPU with scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the `probes` package: import the package, not this script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
BUDGET_S = 120.0


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--label", default="next_is_capitalised")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "probes.json"))
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold-start comparison")
    args = ap.parse_args()

    from probes.context import corpus_activations
    from probes.labels import corpus_labels, token_table
    from probes.linear import ProbeConfig, probe_layers
    from workbench import Corpus, Session
    from workbench.session import resolve_device

    dev = resolve_device(args.device)
    if dev.type == "cuda":
        from workbench.testing import random_session

        s = random_session(device="cuda", dtype=torch.bfloat16)
        corpus_path = ROOT / "data" / "corpus" / "tiny_corpus.txt"
    else:
        s = Session.load("smollm2-135m", device="cpu")
        corpus_path = ROOT / "data" / "corpus" / "tiny_corpus.txt"
    corpus = Corpus.load(corpus_path, s.tokenizer, max_tokens=args.tokens + 16)
    layers = list(range(s.n_layers))
    ca, cap_wall, cap_cpu = timed(lambda: corpus_activations(s, corpus, "resid_post", layers,
                                                              args.tokens, progress=False))
    labels = corpus_labels(args.label, ca.ext, ca.width, token_table(s.tokenizer, s.d_vocab)).reshape(-1)
    keep = labels >= 0
    acts, y, types = ca.acts[keep], labels[keep], ca.types[keep]
    rows = []

    def bench(name, cfg, cold=False):
        if cold:  # every layer from scratch: probe each layer on its own
            def run():
                return [probe_layers(acts[:, [i]], y, types, label=args.label, site="resid_post",
                                     classes=("no", "yes"), layers=[i], cfg=cfg, progress=False)
                        for i in layers]
        else:
            def run():
                return [probe_layers(acts, y, types, label=args.label, site="resid_post",
                                     classes=("no", "yes"), cfg=cfg, progress=False)]
        res, wall, cpu = timed(run)
        accs = [lp for r in res for lp in r.layers]
        best = max(accs, key=lambda r: r.selectivity)
        rows.append({"method": name, "wall_s": wall, "cpu_s": cpu, "fits": 2 * len(layers),
                     "ratio_to_budget": wall / BUDGET_S, "best_layer": best.layer,
                     "best_accuracy": best.accuracy, "best_control": best.control_accuracy,
                     "chance": best.chance})

    bench("logistic, warm-started across layers (battery default)", ProbeConfig("logistic"))
    if not args.skip_cold:
        bench("logistic, cold start per layer", ProbeConfig("logistic"), cold=True)
    bench("ridge (closed form)", ProbeConfig("ridge"))

    print(f"\nlinear probes: {len(acts)} examples ({int(y.sum())} positive, label {args.label}), "
          f"{len(layers)} layers x (task + control), d={acts.shape[-1]}, device {dev}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"capture forward: {cap_wall:.1f} s wall ({cap_cpu:.1f} s CPU) for {len(ca.acts)} tokens")
    print(f"{'method':58s} {'wall s':>8s} {'cpu s':>8s} {'/budget':>8s} {'best acc':>9s} {'control':>8s}")
    for r in rows:
        print(f"{r['method']:58s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['ratio_to_budget']:8.2f} "
              f"{r['best_accuracy']:9.3f} {r['best_control']:8.3f}")
    if len(rows) == 3:
        print(f"warm / cold speed-up: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x; "
              f"logistic / ridge time: {rows[0]['wall_s'] / rows[2]['wall_s']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "probes", "device": str(dev), "model": s.name,
                               "tokens": int(len(ca.acts)), "examples": int(len(acts)),
                               "layers": len(layers), "budget_s": BUDGET_S,
                               "capture_wall_s": cap_wall, "capture_cpu_s": cap_cpu,
                               "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
