"""Bench: seconds per attribution graph (units basis) vs the per-node ablation loop it replaces.

Graph: `workbench.graphs.build_graph` on a prompt of 16 and of 64 tokens (random token ids),
--nodes candidate units (default 2,000) and every edge among them, pruning included,
faithfulness off. Compared against: the per-node ablation loop, which gets the same
information (each node's effect on every other node) with one forward pass per node, each
capturing every layer's FFN coefficients with that node zeroed; timed on --loop-nodes nodes and
extrapolated linearly to --nodes. Also one row at the default settings on 16 tokens (the
CPU goal: under 60 s on 2 cores with the real model).

On CUDA the session is `random_session` (random SmolLM2-shape weights, bf16; attribution runs
in float32 copies); on CPU the real default model when it loads.

    python benches/graph.py --device auto [--nodes 2000] [--lengths 16,64] [--out out/bench/graph.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workbench import capture_tokens, sites, zero_neurons
from workbench.graphs import build_graph
from workbench.testing import sync, timing_session


def _ids(session, n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    vocab = min(session.d_vocab, len(session.tokenizer))
    return torch.randint(100, vocab, (n,), generator=g).tolist()


def _timed(session, fn):
    sync(session)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(session)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _ablation_loop(session, ids: list[int], units: list[tuple[int, int, int]]) -> None:
    """The per-node loop: one forward per node with it zeroed, every layer's coefficients read."""
    batch = session.batch_from_ids([ids])
    all_sites = sites("mlp_post", session=session)
    for lay, pos, idx in units:
        capture_tokens(session, batch, all_sites, logits=True,
                       interventions=[zero_neurons(lay, [idx], positions=[pos])])


def _row(session, n_tok: int, nodes: int, loop_nodes: int) -> dict:
    ids = _ids(session, n_tok)
    g, wall, cpu = _timed(session, lambda: build_graph(session, ids, max_nodes=nodes, faithfulness_nodes=0,
                                                       progress=False))
    units = [(u.layer, u.pos, u.index) for u in g.units()][:loop_nodes]
    units += [(j % session.n_layers, n_tok - 1, j) for j in range(loop_nodes - len(units))]
    _, lw, _ = _timed(session, lambda: _ablation_loop(session, ids, units))
    per = lw / len(units)
    loop_s = per * g.candidates
    return {"tokens": n_tok, "nodes": g.candidates, "kept": g.summary["nodes"],
            "edges_computed": g.candidates * (g.candidates + n_tok), "graph_s": wall,
            "graph_cpu_s": cpu, "loop_s_extrapolated": loop_s, "loop_s_per_node": per,
            "loop_nodes_timed": len(units), "ratio": loop_s / wall,
            "exactness_max_rel_error": g.summary["exactness_max_rel_error"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--lengths", default="16,64")
    ap.add_argument("--loop-nodes", type=int, default=10)
    ap.add_argument("--no-default-row", action="store_true")
    ap.add_argument("--out", default="out/bench/graph.json")
    args = ap.parse_args(argv)
    session, what = timing_session(args.device)
    if session.device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    build_graph(session, _ids(session, 8), max_nodes=32, faithfulness_nodes=0, progress=False)  # warm-up
    for n_tok in [int(x) for x in args.lengths.split(",")]:
        rows.append(_row(session, n_tok, args.nodes, args.loop_nodes))
    default = None
    if not args.no_default_row:
        prompt = "The Eiffel Tower is located in the city of Paris, and the capital of Italy is"
        ids = session.encode(prompt)[:16]
        g, wall, cpu = _timed(session, lambda: build_graph(session, ids, progress=False))
        default = {"tokens": len(ids), "seconds": wall, "cpu_s": cpu, "summary": g.summary,
                   "settings": g.config.to_dict()}
    print(f"attribution graphs on {what}, {session.device} ({torch.get_num_threads()} threads)")
    print(f"{'tokens':>6s} {'nodes':>6s} {'kept':>5s} {'graph s':>9s} {'cpu s':>8s} {'loop s (extrap.)':>17s} "
          f"{'ratio':>7s} {'exact err':>10s}")
    for r in rows:
        print(f"{r['tokens']:6d} {r['nodes']:6d} {r['kept']:5d} {r['graph_s']:9.2f} {r['graph_cpu_s']:8.2f} "
              f"{r['loop_s_extrapolated']:17.1f} {r['ratio']:7.1f} {r['exactness_max_rel_error']:10.1e}")
    if default:
        print(f"default settings, {default['tokens']} tokens: {default['seconds']:.1f} s wall, "
              f"{default['cpu_s']:.1f} s CPU (goal on 2 CPU cores: < 60 s); "
              f"{default['summary']['nodes']} nodes, completeness {default['summary']['completeness']:.3f}, "
              f"faithfulness {default['summary']['faithfulness_spearman']:.2f}")
    print("ratio = per-node ablation loop (one forward per node, extrapolated) / graph; the loop's "
          "answer is total effects, the graph's is direct edges plus their path sums")
    out = {"bench": "graph", "model": what, "device": str(session.device), "threads": torch.get_num_threads(),
           "rows": rows, "default": default, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
