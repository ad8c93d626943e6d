"""Capture latency and throughput: the session's capture (default, generic and fast paths) against
the plain Hugging Face forward, TransformerLens `run_with_cache` of all hooks and, when installed,
nnsight (a trace of the plain HF model saving the same FFN coefficients: the peer row).

One process per device (``--device auto|cpu|cuda``). Model: `random_session` (random-init
weights of the SmolLM2-135M shape; bf16 on CUDA, fp32 on CPU unless --dtype). The plain HF
model is a separate LlamaForCausalLM of the same config with SDPA attention (timing does not
depend on weight values).

(a) interactive: one 32-token prompt, all FFN coefficients (mlp_post of every layer); wall
    latency per call (host clock around call + synchronize), median of --reps.
(b) throughput: batches BxT (default 32x512 and 64x1024 on CUDA, 4x128 on CPU), same sites;
    tokens/s and share of the device's peak matmul rate (measured once: a large matmul in the
    session dtype). Model FLOPs per token = 2 * N_nonemb + 2 * n_layers * T * d_attn (causal
    attention: QK^T and AV over the lower triangle); the unembed, which the HF forward and
    run_with_cache also compute, is not counted.

`capture default` is the plain call `capture(s, batch, sites)` (it picks its path; the path is
recorded). Writes JSON to --out (default out/bench/capture-<device>.json) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from workbench import capture, sites
from workbench.fastpath import COMPILE_AFTER_USES, CompiledCapture, GraphCapture
from workbench.session import TokenBatch, resolve_device
from workbench.testing import random_session

GOAL_MS, GOAL_MFU = 5.0, 0.35


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps: int, warmup: int) -> dict:
    """Median wall time of fn() + synchronize, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": reps}


def guarded(name, fn, dev, reps, warmup) -> dict:
    """timed(), reporting out-of-memory (and other failures) instead of crashing."""
    try:
        return {"name": name, **timed(fn, dev, reps, warmup)}
    except torch.OutOfMemoryError as exc:
        return {"name": name, "error": "out of memory", "detail": str(exc)[:160]}
    except Exception as exc:  # noqa: BLE001 - a bench reports every row it can
        return {"name": name, "error": type(exc).__name__, "detail": str(exc)[:300]}
    finally:
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def peak_flops(dev, dtype) -> float:
    n = 8192 if dev.type == "cuda" else 2048
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    r = timed(lambda: a @ b, dev, reps=10 if dev.type == "cuda" else 3, warmup=3)
    return 2 * n**3 / r["median_s"]


def plain_hf(session, dev, dtype):
    from transformers import LlamaForCausalLM

    cfg = copy.deepcopy(session.hf_model.config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(1)
    return LlamaForCausalLM(cfg).to(dev, dtype).eval()


def nnsight_capture(plain, tokenizer):
    """A function ids -> the 30 saved FFN coefficients through nnsight, or None if not installed."""
    try:
        from nnsight import LanguageModel
    except Exception:  # noqa: BLE001 - not installed: no peer row
        return None
    lm = LanguageModel(plain, tokenizer=tokenizer)
    layers = range(len(plain.model.layers))

    def run(ids):
        saved = []
        with lm.trace(ids):
            for i in layers:
                saved.append(lm.model.layers[i].mlp.down_proj.input.save())
        return saved

    return run


def n_nonembedding(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)


def _batch(ids: torch.Tensor) -> TokenBatch:
    """A TokenBatch of random ids (the random session's tiny tokenizer cannot spell them)."""
    return TokenBatch(ids, torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device))


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def interactive(s, plain, dev, args) -> tuple[list[dict], dict]:
    mp = sites("mlp_post", session=s)
    g = torch.Generator().manual_seed(0)
    batch = _batch(torch.randint(3, 49152, (1, 32), generator=g).to(dev))
    ids = batch.tokens
    gc_graph = GraphCapture(s, mp)
    gc_eager = GraphCapture(s, mp)
    gc_eager.use_graphs = False
    rows = []
    nr, w = args.reps, args.warmup
    with torch.no_grad():
        rows.append(guarded("hf_forward (logits)", lambda: plain(ids), dev, nr, w))
        rows.append(guarded("hf_trunk (no unembed)", lambda: plain.model(ids), dev, nr, w))
        rows.append(guarded("capture default", lambda: capture(s, batch, mp), dev, nr, w))
        rows[-1]["path"] = capture(s, batch, mp).path
        rows.append(guarded("capture generic", lambda: capture(s, batch, mp, backend="generic"), dev, nr, w))
        rows.append(guarded("capture fast eager", lambda: gc_eager(batch), dev, nr, w))
        nns = nnsight_capture(plain, s.tokenizer)
        if nns is not None:
            rows.append(guarded("nnsight trace, 30 saves", lambda: nns(ids), dev, nr, w))
        if dev.type == "cuda":
            rows.append(guarded("capture fast graph", lambda: gc_graph(batch), dev, nr, w))
            if not args.no_compile and not args.no_graph_compile:
                gc_comp = GraphCapture(s, mp, compile=True)
                rows.append(guarded("capture fast graph+compile", lambda: gc_comp(batch), dev, nr, w))
        rows.append(guarded("capture(backend='graph')", lambda: capture(s, batch, mp, backend="graph"),
                            dev, nr, w))
        rows.append(guarded("run_with_cache all hooks", lambda: s.model.run_with_cache(ids), dev, nr, w))
        ref = capture(s, batch, mp, backend="generic")
        checks = {}
        for name, obj in [("fast eager", gc_eager), ("fast graph", gc_graph if dev.type == "cuda" else None)]:
            if obj is not None:
                cap = obj(batch)
                checks[name] = [round(max_rel(cap[x], ref[x]), 6) for x in mp]
        if s.dtype != torch.float32:  # the same check in fp32: drift vs a real mismatch
            s32 = random_session(device=str(dev), dtype=torch.float32)
            g32 = GraphCapture(s32, sites("mlp_post", session=s32))
            cap, ref = g32(batch), capture(s32, batch, sites("mlp_post", session=s32), backend="generic")
            checks["fast graph fp32" if dev.type == "cuda" else "fast eager fp32"] = [
                round(max_rel(cap[x], ref[x]), 8) for x in ref.acts]
            del s32, g32
    return rows, {"rel_err_vs_generic per layer (||a-b||/||b||)": checks, "tokens": int(ids.numel())}


def _tp_shape(s, plain, dev, bsz, seq, args, cc, ce) -> list[dict]:
    """Rows of one throughput shape (all mlp_post)."""
    mp = sites("mlp_post", session=s)
    g = torch.Generator().manual_seed(bsz * seq)
    ids = torch.randint(3, 49152, (bsz, seq), generator=g).to(dev)
    batch = _batch(ids)
    nr, w = args.tp_reps, 1
    rows = []
    with torch.no_grad():
        rows.append(guarded("hf_forward (logits)", lambda: plain(ids), dev, nr, w))
        rows.append(guarded("hf_trunk (no unembed)", lambda: plain.model(ids), dev, nr, w))
        for _ in range(COMPILE_AFTER_USES - 1):          # a shape's first requests run eager
            capture(s, batch, mp)
        t0 = time.perf_counter()
        capture(s, batch, mp)                             # then it compiles (CUDA, large batches)
        sync(dev)
        second_s = time.perf_counter() - t0
        # three warm-up calls: the GPU idled through the compile (its clocks start low)
        rows.append(guarded("capture default", lambda: capture(s, batch, mp), dev, nr, max(w, 3)))
        rows[-1]["path"] = capture(s, batch, mp).path
        rows[-1]["compile_call_s"] = second_s
        owned = s.owned.get(("compiled", tuple(mp)))      # the default's compiled capture: no second compile
        if cc is not None and owned is not None:
            cc = owned
        rows.append(guarded("capture generic", lambda: capture(s, batch, mp, backend="generic"), dev, nr, w))
        rows.append(guarded("capture fast eager", lambda: ce(batch), dev, nr, w))
        nns = nnsight_capture(plain, s.tokenizer)
        if nns is not None:
            rows.append(guarded("nnsight trace, 30 saves", lambda: nns(ids), dev, nr, w))
        if cc is not None:
            t0 = time.perf_counter()
            try:
                cc(batch)
            except Exception as exc:  # noqa: BLE001 - reported in the row below
                print("compile failed:", exc, file=sys.stderr)
            compile_s = time.perf_counter() - t0
            r = guarded("capture compiled", lambda: cc(batch), dev, nr, w)
            r["first_call_s (compile)"] = compile_s
            r["chunks"] = len(cc.last_plan)
            rows.append(r)
        rows.append(guarded("run_with_cache all hooks", lambda: s.model.run_with_cache(ids), dev, nr, w))
    return rows


def throughput(s, plain, dev, shapes, args, flops_tok, peak) -> list[dict]:
    mp = sites("mlp_post", session=s)
    out = []
    use_compile = dev.type == "cuda" and not args.no_compile
    cc = CompiledCapture(s, mp, compile=True) if use_compile else None
    ce = CompiledCapture(s, mp, compile=False)
    cm = CompiledCapture(s, mp, compile=True, mode=args.compile_mode) if use_compile and args.compile_mode else None
    for bsz, seq in shapes:
        rows = _tp_shape(s, plain, dev, bsz, seq, args, cc, ce)
        if cm is not None:
            ids = torch.randint(0, s.d_vocab, (bsz, seq), device=dev)
            batch = TokenBatch(ids, torch.full((bsz,), seq, device=dev))
            t0 = time.perf_counter()
            cm(batch)
            sync_s = time.perf_counter() - t0
            r = guarded(f"capture compiled ({args.compile_mode})", lambda batch=batch: cm(batch), dev, args.tp_reps, 1)
            r["first_call_s (compile)"] = sync_s
            rows.append(r)
        for r in rows:
            r["shape"] = f"{bsz}x{seq}"
            if "median_s" in r:
                r["tokens_per_s"] = bsz * seq / r["median_s"]
                r["mfu"] = flops_tok(seq) * r["tokens_per_s"] / peak
        out += rows
        gc.collect()
    return out


def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU default)")
    ap.add_argument("--shapes", default=None, help="throughput shapes, e.g. 32x512,64x1024")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tp-reps", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-graph-compile", action="store_true", help="skip the graph+compile row")
    ap.add_argument("--compile-mode", default=None,
                    help="also time a compiled capture in this torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if cuda else torch.float32)
    args.reps = args.reps or (30 if cuda else 5)
    args.tp_reps = args.tp_reps or (5 if cuda else 2)
    shapes = parse_shapes(args.shapes if args.shapes is not None else ("32x512,64x1024" if cuda else "4x128"))
    out = Path(args.out or f"out/bench/capture-{dev.type}.json")

    s = random_session(device=str(dev), dtype=dtype)
    plain = plain_hf(s, dev, dtype)
    n_params = n_nonembedding(plain)
    d_attn = s.n_heads * s.d_head

    def flops_tok(seq: int) -> float:
        return 2 * n_params + 2 * s.n_layers * seq * d_attn

    peak = peak_flops(dev, dtype)
    inter, checks = interactive(s, plain, dev, args)
    tput = throughput(s, plain, dev, shapes, args, flops_tok, peak)
    base = next((r["median_s"] for r in inter if r["name"].startswith("hf_forward") and "median_s" in r), None)
    best_ms = min((r["median_s"] * 1e3 for r in inter if r["name"].startswith("capture fast") and "median_s" in r),
                  default=float("nan"))
    best_mfu = {f"{b}x{t}": max((r.get("mfu", 0) for r in tput if r["shape"] == f"{b}x{t}"
                                 and r["name"].startswith("capture")), default=0) for b, t in shapes}
    def _t(rows, name, shape=None):
        return next((r["median_s"] for r in rows if r["name"] == name and "median_s" in r
                     and (shape is None or r.get("shape") == shape)), None)

    vs_nns = {}
    for label, rows, shape in [("1x32", inter, None)] + [(f"{b}x{t}", tput, f"{b}x{t}") for b, t in shapes]:
        d, n = _t(rows, "capture default", shape), _t(rows, "nnsight trace, 30 saves", shape)
        vs_nns[label] = {"default_s": d, "nnsight_s": n, "nnsight/default": (n / d) if d and n else None}
    result = {
        "bench": "capture", "device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "model": "random-init SmolLM2-135M shape (30 layers, d_model 576, d_mlp 1536)",
        "sites": "mlp_post of all 30 layers",
        "peak_flops": peak, "peak_note": "median of a square matmul (8192^3 CUDA, 2048^3 CPU) in the dtype",
        "n_params_nonembedding": n_params,
        "flops_per_token": "2*N_nonemb + 2*n_layers*T*d_attn (causal attention); unembed not counted",
        "interactive": inter, "interactive_checks": checks, "throughput": tput,
        "goals": {"interactive_ms<5": best_ms < GOAL_MS if cuda else None, "best_fast_ms": best_ms,
                  "throughput_mfu>=0.25": {k: v >= GOAL_MFU for k, v in best_mfu.items()} if cuda else None,
                  "best_capture_mfu": best_mfu, "default_vs_nnsight": vs_nns},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{result['device']}  {result['dtype']}  peak {peak / 1e12:.3f} TFLOP/s  N_nonemb {n_params / 1e6:.1f}M")
    print(f"(a) interactive 1x32, all mlp_post   (vs hf_forward {base * 1e3 if base else float('nan'):.2f} ms)")
    for r in inter:
        if "median_s" in r:
            ratio = r["median_s"] / base if base else float("nan")
            print(f"  {r['name']:<30} {r['median_s'] * 1e3:9.2f} ms   x{ratio:5.2f} of hf_forward"
                  f"{'   path ' + r['path'] if 'path' in r else ''}")
        else:
            print(f"  {r['name']:<30} {r['error']}: {r.get('detail', '')[:80]}")
    for k, v in checks["rel_err_vs_generic per layer (||a-b||/||b||)"].items():
        print(f"  rel. error vs generic, {k}: layer 0 {v[0]:.2e}, max {max(v):.2e}")
    print("(b) throughput, all mlp_post")
    for r in tput:
        if "median_s" in r:
            print(f"  {r['shape']:<8} {r['name']:<30} {r['tokens_per_s'] / 1e3:9.1f} k tok/s   "
                  f"{100 * r['mfu']:5.1f}% of peak{'   path ' + r['path'] if 'path' in r else ''}")
        else:
            print(f"  {r['shape']:<8} {r['name']:<30} {r['error']}")
    print(f"goals: {json.dumps(result['goals'])}\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
