"""Issue 19 README results: attribution graphs on known facts and IOI (real SmolLM2-135M, CPU).

    .venv/bin/python scripts/graph_results.py                    # 20 facts + 20 IOI (+ contrastive)
    .venv/bin/python scripts/graph_results.py --n-facts 10 --n-ioi 10 --no-contrastive

Prompt sets (the project's own): the first N prompts of data/labels/facts.json whose answer
(" " + answer) is one token, target = " " + answer; the first N IOI pairs of
`workbench.saes.tasks.load_task("ioi", session, None)`, target = the indirect object (with its
leading space); contrastive mode on the same clean / corrupt pairs with the logit difference
logit(IO) - logit(S). Each graph reports faithfulness by its own path sums and by attribution
patching in the real model (live), both over the same tested units. Prints a per-prompt table and the means, writes JSON (--out) after every
graph (a partial run still leaves its rows), plus two example graphs in words (top unit nodes
by influence and what their memory cards' values promote).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from workbench import Session
from workbench.graphs import build_graph, contrastive_graph, memory_cards
from workbench.saes.tasks import load_task

KEYS = ("nodes", "units_kept", "edges", "completeness", "completeness_unpruned",
        "exactness_max_rel_error", "faithfulness_spearman", "faithfulness_spearman_frozen",
        "faithfulness_spearman_sink", "faithfulness_nodes", "faithfulness_sink_nodes", "seconds",
        "faithfulness_spearman_graph", "faithfulness_spearman_live", "faithfulness_spearman_sink_live")


def _f(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def row_of(kind: str, prompt: str, target: str, g, extra: dict | None = None) -> dict:
    s = g.summary
    r = {"set": kind, "prompt": prompt, "target": target, **{k: _f(s.get(k, math.nan)) for k in KEYS}}
    r["target_prob"] = dict(zip(g.logits, g.logit_probs)).get(target)
    r.update(extra or {})
    return r


def means(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for k in KEYS:
        v = [r[k] for r in rows if r.get(k) is not None]
        out[k] = sum(v) / len(v) if v else None
        if k in ("faithfulness_spearman", "faithfulness_spearman_sink", "faithfulness_spearman_graph",
                 "faithfulness_spearman_live"):
            out[k.replace("spearman", "n_finite")] = len(v)
    return out


def _unit(g, n, c, extra=None) -> dict:
    return {"id": n.id, "layer": n.layer, "pos": n.pos, "token": g.tokens[n.pos], "neuron": n.index,
            "coefficient": n.activation, "influence": n.influence,
            "promoted": [t.token for t in c.promoted[:6]], "suppressed": [t.token for t in c.suppressed[:4]],
            "sub_update": [t.token for t in c.sub_update[:6]], **(extra or {})}


def example(session, g, k: int = 6) -> dict:
    """Top unit nodes by influence, and the kept units writing most directly into the target
    logit (largest direct edge unit -> logit), with their memory cards (what the values promote)."""
    cards = memory_cards(session, g)  # every kept unit
    units = g.units()
    out = [_unit(g, n, cards[n.id]) for n in units[:k]]
    writers = []
    if g.target is not None:
        tid = session.token_id(g.target)
        li = g.node_index(f"l{tid}")
        direct = {n.id: float(g.adjacency[li, g.node_index(n.id)]) for n in units}
        for n in sorted(units, key=lambda n: -direct[n.id])[:k]:
            c = cards[n.id]
            rank = [t.id for t in c.sub_update].index(tid) if tid in [t.id for t in c.sub_update] else None
            writers.append(_unit(g, n, c, {"direct_to_target": direct[n.id], "target_rank_in_sub_update": rank}))
    return {"prompt": g.prompt, "target": g.target, "tokens": list(g.tokens),
            "summary": {k: _f(v) for k, v in g.summary.items() if isinstance(v, (int, float))},
            "positions_of_kept_units": sorted({n.pos for n in units}),
            "top_units": out, "target_writers": writers}


def describe(ex: dict) -> str:
    lines = [f"Example: {ex['prompt']!r} -> {ex['target']!r}  (kept units at positions "
             f"{ex['positions_of_kept_units']})", "  top units by influence:"]
    for u in ex["top_units"]:
        lines.append(f"  {u['id']:>14}  L{u['layer']:<2} @ {u['token']!r:<12} m={u['coefficient']:+.3f} "
                     f"infl={u['influence']:.4f}  value promotes {u['promoted'][:5]}  "
                     f"m*v promotes {u['sub_update'][:5]}")
    lines.append("  units writing most directly into the target logit:")
    for u in ex["target_writers"]:
        lines.append(f"  {u['id']:>14}  L{u['layer']:<2} @ {u['token']!r:<12} m={u['coefficient']:+.3f} "
                     f"direct={u['direct_to_target']:+.3f}  m*v promotes {u['sub_update'][:6]}")
    return "\n".join(lines)


def _s(x) -> str:
    return "nan" if x is None else f"{x:+.3f}"


def print_row(r: dict) -> None:
    fs = r["faithfulness_spearman"]
    print(f"{r['set']:<11} {r['prompt'][:58]!r:<62} {r['target']!r:<14} nodes={r['nodes']:<4} "
          f"units={r['units_kept']:<4} compl={r['completeness']:.3f} "
          f"faith={'nan' if fs is None else f'{fs:+.3f}'} (n={r.get('faithfulness_nodes')}) "
          f"[graph {_s(r.get('faithfulness_spearman_graph'))} live {_s(r.get('faithfulness_spearman_live'))}] "
          f"sink={_s(r.get('faithfulness_spearman_sink'))} (n={r.get('faithfulness_sink_nodes')}) "
          f"exact={r['exactness_max_rel_error']:.1e} "
          f"t={r['seconds']:.0f}s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-facts", type=int, default=20)
    ap.add_argument("--n-ioi", type=int, default=20)
    ap.add_argument("--max-nodes", type=int, default=150)
    ap.add_argument("--faithfulness-nodes", type=int, default=10)
    ap.add_argument("--no-contrastive", action="store_true", help="skip the contrastive IOI graphs")
    ap.add_argument("--factor", type=float, default=0.0,
                    help="faithfulness: scale of each tested node (0 = ablation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/graph_results.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    settings = {"max_nodes": a.max_nodes, "faithfulness_nodes": a.faithfulness_nodes,
                "faithfulness_factor": a.factor}
    t_start = time.time()
    s = Session.load(device="cpu")
    facts = json.loads(Path("data/labels/facts.json").read_text())
    fact_rows = []
    for f in facts:
        try:
            s.token_id(" " + f["answer"])
        except Exception:
            continue
        fact_rows.append(f)
    fact_rows = fact_rows[: a.n_facts]
    task = load_task("ioi", s, None, n=a.n_ioi) if a.n_ioi else None
    res = {"model": s.name, "device": "cpu", "threads": a.threads, "settings": settings,
           "graph_config_other": "defaults (keep=0.8, edge_keep=0.98, max_logits=10, logit_prob=0.95)",
           "host": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "python": platform.python_version()},
           "rows": {"facts": [], "ioi": [], "ioi_contrastive": []}, "means": {}, "examples": {}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        res["means"] = {k: means(v) for k, v in res["rows"].items() if v}
        res["wall_seconds"] = time.time() - t_start
        res["load_at_end"] = os.getloadavg()
        out.write_text(json.dumps(res, indent=1))

    print(f"settings: {settings} (other GraphConfig fields default), CPU threads={a.threads}, "
          f"load={os.getloadavg()}", flush=True)
    # interleaved (fact i, IOI i, contrastive IOI i) so a run stopped early has balanced sets
    n_ioi = len(task) if task is not None else 0
    for i in range(max(len(fact_rows), n_ioi)):
        if i < len(fact_rows):
            f = fact_rows[i]
            tgt = " " + f["answer"]
            g = build_graph(s, f["prompt"], target=tgt, progress=False, **settings)
            r = row_of("facts", f["prompt"], tgt, g)
            res["rows"]["facts"].append(r)
            print_row(r)
            if i == 0:
                res["examples"]["facts"] = example(s, g)
            save()
        if i < n_ioi:
            tgt = s.to_str_tokens([task.correct[i][0]])[0]
            foil = s.to_str_tokens([task.wrong[i][0]])[0]
            g = build_graph(s, task.clean[i], target=tgt, progress=False, **settings)
            r = row_of("ioi", task.clean[i], tgt, g, {"foil": foil})
            res["rows"]["ioi"].append(r)
            print_row(r)
            if i == 0:
                res["examples"]["ioi"] = example(s, g)
            save()
            if not a.no_contrastive:
                g = contrastive_graph(s, task.clean[i], task.corrupt[i], tgt, foil, progress=False,
                                      **{**settings, "faithfulness_factor": 0.0})
                sm = g.summary
                r = row_of("ioi_contr", task.clean[i], f"{tgt}-{foil}", g,
                           {"corrupt": task.corrupt[i], "metric_clean": sm.get("metric_clean"),
                            "metric_corrupt": sm.get("metric_corrupt"),
                            "metric_linear_estimate": sm.get("metric_linear_estimate")})
                res["rows"]["ioi_contrastive"].append(r)
                print_row(r)
                save()
    save()
    print("\nmeans (settings: " + json.dumps(settings) + ", CPU, shared machine)")
    print(f"{'set':<16} {'n':>3} {'nodes':>6} {'units':>6} {'compl':>6} {'faith':>7} {'graph':>7} {'live':>7} "
          f"{'exact':>9} {'sec':>6}")
    for k, m in res["means"].items():
        print(f"{k:<16} {m['n']:>3} {m['nodes']:>6.1f} {m['units_kept']:>6.1f} {m['completeness']:>6.3f} "
              f"{_s(m['faithfulness_spearman']):>7} {_s(m['faithfulness_spearman_graph']):>7} "
              f"{_s(m['faithfulness_spearman_live']):>7} {m['exactness_max_rel_error']:>9.1e} {m['seconds']:>6.0f}")
    for ex in res["examples"].values():
        print("\n" + describe(ex))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
