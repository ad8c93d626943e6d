"""Research-size models on one GPU: every pillar with the default settings, against the bare forward.

Compared against: the bare forward of the same weights (the session's pure Hugging Face trunk,
no hooks, no unembedding), timed in the same process for each row's batch shape. Models:
random-init weights of the Llama-3.1-8B and Gemma-3-12B (text) shapes in bfloat16 on CUDA
(`workbench.testing.random_session`; timing does not depend on the values), the SmolLM2
shape in float32 on the CPU. Rows, each with seconds, peak allocated memory and the ratio:

- load: build the session (weights made on the device).
- capture 1x32 / 8x512, all ``mlp_post``: the default `capture` (its path is reported) and,
  for the 1.2x goal, the best explicit fast path; ratio = bare forward time / capture time.
- harvest: `harvest` with its defaults except window 512 and --harvest-tokens tokens;
  ratio = harvest tok/s over the default capture's tok/s on the same batches.
- lens: `logit_lens` of one prompt; covariance: `editing.key_stats` (uncached);
  ROME: one `compute_rome_update` (25 steps) + apply/undo; causal trace: `trace_fact`
  (mlp, 10 samples); graph: `build_graph` with its defaults on 16 tokens (float32 copies of
  the weights; ratio = bare forward of those tokens / graph); SAE: `train_sae` (top-k, 16
  d_model latents) over --sae-tokens tokens, ratio = its tok/s over the raw activation stream's
  (the forward up to the SAE's layer, with its capture); the note adds its tok/s over the whole
  model's bare forward at the stream's batch shape (a looser yardstick: the stream stops halfway).
- close: allocated memory after `Session.close()` minus before the load (0 = nothing leaked).

With --memory-gib G the process is capped at G GiB (`set_per_process_memory_fraction`), e.g.
80 to show that the memory plan keeps every default job inside an 80 GB card.

    python benches/scale.py --device auto [--shapes llama3.1-8b,gemma3-12b] [--memory-gib 80]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import Corpus, capture_tokens, sites  # noqa: E402
from workbench.fastpath import COMPILE_AFTER_USES  # noqa: E402
from workbench.memories import harvest  # noqa: E402
from workbench.pure import pure_view  # noqa: E402
from workbench.session import TokenBatch, resolve_device  # noqa: E402
from workbench.testing import random_session  # noqa: E402

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "The Eiffel Tower"


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def gib(x: int) -> float:
    return round(x / 2**30, 2)


class Table:
    """Rows of one run, written to JSON after each (a killed run keeps what it measured)."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows = out, meta, []

    def add(self, **row) -> None:
        self.rows.append(row)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({**self.meta, "rows": self.rows}, indent=1, default=str))
        t = f"{row['seconds']:9.3f} s" if row.get("seconds") is not None else f"{'-':>11}"
        r = f"x{row['ratio']:.2f}" if row.get("ratio") is not None else ""
        print(f"{row['shape']:<13} {row['step']:<34} {t} {row.get('peak_gib', '-'):>7} GiB {r:>7} "
              f"{row.get('note', '')}", flush=True)


def measure(dev, fn, reps: int = 1, warmup: int = 0):
    """(median seconds, peak allocated bytes, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    return sorted(times)[len(times) // 2], peak, out


GROUPS = ("capture", "harvest", "lens", "covariance", "rome", "trace", "graph", "sae")
ONLY: set[str] = set(GROUPS)     # `--only`


def guarded(table: Table, shape: str, step: str, fn) -> None:
    """Run one bench step; a failure (out of memory included) becomes a row, not a crash."""
    if step != "all" and step not in ONLY:
        return
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a bench reports every row it can
        table.add(shape=shape, step=step, seconds=None, error=f"{type(exc).__name__}: {str(exc)[:200]}",
                  note=f"FAILED {type(exc).__name__}")
    finally:
        gc.collect()


def _batch(ids: torch.Tensor) -> TokenBatch:
    return TokenBatch(ids, torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device))


def run_shape(shape: str, dev, dtype, args, table: Table) -> int:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    sec, peak, s = measure(dev, lambda: random_session(shape, device=str(dev), dtype=dtype))
    table.add(shape=shape, step="load (random init on device)", seconds=sec, peak_gib=gib(peak),
              note=f"{sum(p.numel() for p in s.hf_model.parameters()) / 1e9:.2f}B params, {s.dtype}")
    mp = sites("mlp_post", session=s)
    vocab = len(s.tokenizer)
    g = torch.Generator().manual_seed(0)
    trunk = pure_view(s).model
    reps = 20 if dev.type == "cuda" else 2
    bare = {}

    def time_bare(n: int, w: int) -> tuple[float, int, torch.Tensor]:
        """Seconds and peak of the bare trunk forward on random [n w] ids (kept in `bare`)."""
        ids = torch.randint(3, vocab, (n, w), generator=g).to(dev)
        with torch.no_grad():
            sec_b, peak_b, _ = measure(dev, lambda: trunk(input_ids=ids, use_cache=False), reps, 2)
        bare[(n, w)] = sec_b
        return sec_b, peak_b, ids

    for n, w in ((1, 32), (args.rows, args.width)) if "capture" in ONLY else ():
        sec_b, peak_b, ids = time_bare(n, w)
        batch = _batch(ids)
        table.add(shape=shape, step=f"bare forward {n}x{w}", seconds=sec_b, peak_gib=gib(peak_b), ratio=1.0,
                  note=f"{n * w / sec_b:,.0f} tok/s (pure HF trunk, no unembed)")
        firsts = []
        for i in range(COMPILE_AFTER_USES):                # graph capture; compile once a stream
            t0 = time.perf_counter()
            first = capture_tokens(s, batch, mp).path
            sync(dev)
            if i in (0, COMPILE_AFTER_USES - 1):
                firsts.append(f"{first} {time.perf_counter() - t0:.1f} s")
        sec_d, peak_d, cap = measure(dev, lambda b=batch: capture_tokens(s, b, mp), reps, 1)
        table.add(shape=shape, step=f"capture {n}x{w} default", seconds=sec_d, peak_gib=gib(peak_d),
                  ratio=sec_b / sec_d, note=f"path {cap.path}; first calls {', '.join(firsts)}; "
                                            "ratio = bare/capture")
        best = {}
        for backend in (("graph", "eager") if n * w <= 256 else ("compiled", "eager")):
            if backend == "graph" and dev.type != "cuda":
                continue
            sec_f, _, _ = measure(dev, lambda b=batch, k=backend: capture_tokens(s, b, mp, backend=k), reps, 1)
            best[backend] = sec_f
        name, sec_best = min(best.items(), key=lambda kv: kv[1])
        table.add(shape=shape, step=f"capture {n}x{w} best explicit ({name})", seconds=sec_best,
                  ratio=sec_b / sec_best, note=f"default / best = {sec_d / sec_best:.2f} (goal <= 1.2); "
                  + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items()))
        del cap
    # enough windows for the harvest and for the SAE rows (session 21 found `--only sae` runs
    # training on 65,536 tokens: the corpus was sized by --harvest-tokens alone)
    ids = torch.randint(3, vocab, (max(args.harvest_tokens, args.sae_tokens) + 4096,), generator=g)
    corpus = Corpus("random", ids, s.tokenizer)
    hw = 512

    def do_harvest():
        from workbench.memories import harvest_plan

        plan = harvest_plan(s, list(range(s.n_layers)), hw, args.harvest_tpb)
        # whole batches only: a short last batch is a new shape, whose fused statistics pass
        # compiles inside the timed call (session 13's 0.61x at 8B had a 4,096-token tail)
        n_tok = max(plan.tokens_per_batch, args.harvest_tokens // plan.tokens_per_batch * plan.tokens_per_batch)

        def bare_capture():
            n = 0
            for wb in corpus.batches(s, window=hw, tokens_per_batch=plan.tokens_per_batch,
                                     max_tokens=n_tok, progress=False):
                capture_tokens(s, _batch(wb.tokens), mp)
                n += wb.tokens.numel()
            return n

        bare_capture()                                     # warm-up: the batches' shape compiles here
        harvest(s, corpus, window=hw, tokens_per_batch=args.harvest_tpb, max_tokens=2 * plan.tokens_per_batch,
                progress=False, context=0)
        sec_h, peak_h, idx = measure(dev, lambda: harvest(s, corpus, window=hw, tokens_per_batch=args.harvest_tpb,
                                                          max_tokens=n_tok, progress=False, context=0))
        sec_c, _, n = measure(dev, bare_capture)
        table.add(shape=shape, step=f"harvest {idx.n_tokens} tok, all layers", seconds=sec_h,
                  peak_gib=gib(peak_h), ratio=sec_c / sec_h,
                  note=f"{idx.n_tokens / sec_h:,.0f} tok/s; bare capture {n / sec_c:,.0f} tok/s; "
                       f"{plan.tokens_per_batch} tok/batch planned; ratio = harvest/capture (goal >= 0.85)")

    guarded(table, shape, "harvest", do_harvest)

    def do_lens():
        from workbench.vocab import logit_lens

        logit_lens(s, PROMPT)
        sec, peak, _ = measure(dev, lambda: logit_lens(s, PROMPT), 3)
        n = len(s.encode(PROMPT))
        if (1, 32) not in bare:                            # --only without capture: time it here
            time_bare(1, 32)
        table.add(shape=shape, step="logit lens, one prompt", seconds=sec, peak_gib=gib(peak),
                  ratio=bare[(1, 32)] / sec, note=f"{n} tokens; ratio = bare 1x32 forward / lens")

    guarded(table, shape, "lens", do_lens)
    layer = s.n_layers // 3
    state = {}

    def do_cov():
        from editing import key_stats

        sec, peak, st = measure(dev, lambda: key_stats(s, layer, corpus, n_tokens=args.cov_tokens,
                                                       use_cache=False, progress=False))
        state["stats"] = st
        table.add(shape=shape, step=f"covariance layer {layer}, {st.n_tokens} tok", seconds=sec,
                  peak_gib=gib(peak), note=f"{st.n_tokens / sec:,.0f} tok/s")

    guarded(table, shape, "covariance", do_cov)

    def do_rome():
        from editing import EditRequest, RomeConfig, apply, compute_rome_update, context_prefixes

        cfg = RomeConfig(steps=25, stop_nll=0.0)
        context_prefixes(s, cfg)
        req = EditRequest(PROMPT, SUBJECT, "France")
        w = pure_view(s).get_submodule(f"model.layers.{layer}.mlp.down_proj").weight
        w0 = w.detach().clone() if dev.type == "cpu" or w.numel() < 2**28 else None
        sec, peak, up = measure(dev, lambda: compute_rome_update(s, req, state["stats"], cfg))
        t0 = time.perf_counter()
        with apply(s, up):
            pass
        sync(dev)
        undo = time.perf_counter() - t0
        exact = "undo bitwise" if w0 is None or torch.equal(w0, w.detach()) else "UNDO DIFFERS"
        table.add(shape=shape, step=f"ROME edit layer {layer} (25 steps)", seconds=sec, peak_gib=gib(peak),
                  note=f"apply+undo {undo:.3f} s, {exact if w0 is not None else 'undo not compared'}")

    guarded(table, shape, "rome", do_rome)

    def do_trace():
        from editing import TraceConfig, trace_fact

        cfg = TraceConfig(kinds=("mlp",), samples=10)
        trace_fact(s, PROMPT, SUBJECT, 0.1, config=TraceConfig(kinds=("mlp",), samples=1))
        sec, peak, _ = measure(dev, lambda: trace_fact(s, PROMPT, SUBJECT, 0.1, config=cfg))
        table.add(shape=shape, step="causal trace (mlp, 10 samples)", seconds=sec, peak_gib=gib(peak),
                  note=f"{s.n_layers} layers x {len(s.encode(PROMPT))} positions")

    guarded(table, shape, "trace", do_trace)

    def do_graph():
        from workbench.graphs import build_graph

        gids = torch.randint(3, vocab, (16,), generator=torch.Generator().manual_seed(1)).tolist()
        build_graph(s, gids[:8], max_nodes=32, faithfulness_nodes=0, progress=False)  # warm-up
        sec, peak, gr = measure(dev, lambda: build_graph(s, gids, progress=False))
        ids = torch.tensor([gids], device=dev)
        with torch.no_grad():
            sec_f, _, _ = measure(dev, lambda: trunk(input_ids=ids, use_cache=False), reps, 2)
        table.add(shape=shape, step="attribution graph, 16 tokens", seconds=sec, peak_gib=gib(peak),
                  ratio=sec_f / sec,
                  note=f"default settings; {gr.candidates} candidates, {gr.summary['nodes']} nodes kept, "
                       f"exactness {gr.summary['exactness_max_rel_error']:.1e}; ratio = bare 1x16 forward / graph")

    guarded(table, shape, "graph", do_graph)

    def do_sae():
        from workbench.hooks import parse_site
        from workbench.saes import SAEConfig, TrainConfig, train_sae
        from workbench.saes.stream import stream_vectors, window_order

        site = f"resid_post:{s.n_layers // 2}"
        tcfg = TrainConfig(total_tokens=args.sae_tokens, eval_tokens=0, warmup_steps=10,
                           dead_after_tokens=args.sae_tokens // 4)
        st = window_order(corpus, s, tcfg.window, 0)[: args.sae_tokens // (tcfg.window - 1) + 1]

        def raw():
            return sum(len(x) for x in stream_vectors(s, corpus, parse_site(site), None, st, tcfg.window,
                                                      tcfg.tokens_per_forward, True))

        # the stream's capture compiles from a shape's COMPILE_AFTER_USES-th batch (every batch of
        # a stream has one shape): warm it past that, so no timed call below pays the compile
        t0 = time.perf_counter()
        raw()
        seen = s.owned.get(("shapes", (parse_site(site),)), {})
        while seen and min(seen.values()) <= COMPILE_AFTER_USES:
            raw()
        warm_s = time.perf_counter() - t0
        sec_r, _, n = measure(dev, raw)
        # the whole model's bare forward (no hooks, no unembedding) at the stream's batch shape: the
        # issue's "bare forward"; the stream stops at the SAE's layer, so its ratio is the stricter one
        rows = max(1, tcfg.tokens_per_forward // tcfg.window)
        ids_f = torch.randint(3, vocab, (rows, tcfg.window), generator=g).to(dev)
        with torch.no_grad():
            sec_full, _, _ = measure(dev, lambda: trunk(input_ids=ids_f, use_cache=False), reps, 2)
        full_rate = ids_f.numel() / sec_full
        for width in args.sae_widths or [16 * s.d_model, 131072]:
            scfg = SAEConfig("topk", s.d_model, width, site=site, k=64)
            for sparse in (False, True):
                cfg = TrainConfig(**{**tcfg.to_dict(), "sparse_step": sparse})
                # warm-up: 4 steps with AuxK on from the second (the compiled step's graphs are made here)
                train_sae(s, corpus, scfg, TrainConfig(**{**cfg.to_dict(), "total_tokens": cfg.batch_size * 4,
                                                          "dead_after_tokens": cfg.batch_size}), progress=False)
                sec, peak, res = measure(dev, lambda scfg=scfg, cfg=cfg: train_sae(s, corpus, scfg, cfg, progress=False))
                ratio = (res.tokens / sec) / (n / sec_r)
                table.add(shape=shape, step=f"SAE top-k {width} ({'sparse' if sparse else 'dense'})",
                          seconds=sec, peak_gib=gib(peak), ratio=ratio,
                          note=f"{res.tokens / sec:,.0f} tok/s vs stream {n / sec_r:,.0f} "
                               f"(stream warmed {warm_s:.0f} s); goal >= 0.7; "
                               f"x{res.tokens / sec / full_rate:.2f} of the whole bare forward "
                               f"({full_rate:,.0f} tok/s at {rows}x{tcfg.window})")

    guarded(table, shape, "sae", do_sae)
    s.close()
    return before


def after_close(dev, before: int, shape: str, table: Table) -> None:
    """Allocated memory once the closed session and every bench result are gone. Reported twice:
    as read, and after clearing cuBLAS's per-stream workspaces (the process's, not the session's;
    the CUDA test of `Session.close` clears them too)."""
    gc.collect()
    if dev.type != "cuda":
        table.add(shape=shape, step="close: allocated - before load", seconds=None, note="0.0 MiB (CPU)")
        return
    torch.cuda.synchronize(dev)
    raw = torch.cuda.memory_allocated(dev)
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    after = torch.cuda.memory_allocated(dev)
    table.add(shape=shape, step="close: allocated - before load", seconds=None,
              note=f"{(after - before) / 2**20:.1f} MiB after clearing cuBLAS workspaces "
                   f"({(raw - before) / 2**20:.1f} MiB as read)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shapes", default=None, help="comma list of workbench.testing.SHAPES")
    ap.add_argument("--memory-gib", type=float, default=None, help="cap this process at this many GiB")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--harvest-tokens", type=int, default=None)
    ap.add_argument("--harvest-tpb", type=int, default=None,
                    help="harvest tokens_per_batch bound (default: the harvest's own, 16384)")
    ap.add_argument("--cov-tokens", type=int, default=None)
    ap.add_argument("--sae-tokens", type=int, default=None)
    ap.add_argument("--sae-widths", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="comma list of SAE widths (default: 16 d_model and 131072)")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma list of step groups (default all: {','.join(GROUPS)}; rome needs covariance)")
    ap.add_argument("--out", default="out/bench/scale.json")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(GROUPS):
        ap.error(f"--only {sorted(only - set(GROUPS))}: choose from {', '.join(GROUPS)}")
    ONLY.clear()
    ONLY.update(only)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    shapes = (args.shapes or ("llama3.1-8b,gemma3-12b" if cuda else "smollm2-135m")).split(",")
    dtype = torch.bfloat16 if cuda else torch.float32
    args.harvest_tokens = args.harvest_tokens or (65536 if cuda else 4096)
    args.cov_tokens = args.cov_tokens or (20000 if cuda else 2048)
    args.sae_tokens = args.sae_tokens or (262144 if cuda else 16384)
    if not cuda:
        args.rows, args.width = min(args.rows, 2), min(args.width, 128)
    if cuda and args.memory_gib:
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * 2**30 / total), dev.index or 0)
    meta = {"bench": "scale", "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
            "torch": torch.__version__, "dtype": str(dtype), "memory_cap_gib": args.memory_gib,
            "compared_against": "bare forward of the pure HF trunk (no hooks, no unembed), same process",
            "args": vars(args)}
    table = Table(Path(args.out), meta)
    print(f"{meta['device']}, {dtype}, cap {args.memory_gib} GiB")
    for shape in shapes:
        got = []
        guarded(table, shape, "all", lambda sh=shape, got=got: got.append(run_shape(sh, dev, dtype, args, table)))
        if got:
            after_close(dev, got[0], shape, table)
    print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
