"""Issue 19 study: would gradients through the REAL model (attribution patching, Marks et al.
2024) predict single-unit ablations better than the attribution graph's frozen model?

    .venv/bin/python scripts/graph_live_study.py                        # 20 facts + 20 IOI pairs
    .venv/bin/python scripts/graph_live_study.py --n-facts 3 --n-ioi 3  # quick

What it measures, and against what. For each prompt it builds the graph exactly as
scripts/graph_results.py does (`build_graph` / `contrastive_graph`, max_nodes=150, the other
GraphConfig fields at their defaults; the same prompts: the first N one-token-answer prompts of
data/labels/facts.json, the first N pairs of `load_task("ioi", s, None, n=20)`), then runs the
library's own faithfulness check on it (`faithfulness` / `contrastive_faithfulness`, top 10
kept units): each tested unit i (layer l, position p, coefficient m_i at blocks.l.mlp.hook_post)
is set to its ablated value v_i in the real model (v_i = 0; contrastive: its value on the
corrupt prompt) and the change of the metric (target logit; contrastive: logit(IO) - logit(S))
is measured. Those measured changes are the ground truth. Every method below predicts the same
changes, and is scored by its Spearman rank correlation with them, over the tested units at
positions >= 1 and, apart, over the tested units at position 0 (the attention sink; target-logit
graphs only, the contrastive graphs have none there):

  graph         the graph's own prediction (path sum inside the pruned graph; what
                faithfulness_spearman reports, reproduced here as a check)
  frozen        (v_i - m_i) dM/dm_i in the frozen model, all paths (faithfulness_spearman_frozen)
  live          (v_i - m_i) dM/dm_i in the real model: attention patterns, RMSNorm factors and
                SiLU gates free (attribution patching; one backward pass gives every unit)
  <x>_frozen    the same gradient with only <x> held fixed (attn = attention patterns, via
                .detach() at hook_pattern; norm = every RMSNorm scale, hook_scale incl. the final
                norm; gate = gate pre-activation, mlp.gate.hook_out)
  <x>_live      the same gradient with only <x> free (the other two held fixed)
  hooks_frozen  all three held fixed by hooks: must equal `frozen` (checked: max relative error)
  ig1           (v_i - m_i) dM/dm_i at the half-ablated point m_i -> (m_i + v_i)/2, unit alone
  ig4           integrated gradients along m_i -> v_i (unit alone, midpoint rule at 4 points
                alpha = 1/8 .. 7/8; batched over units and points): the upper bound of a
                one-unit gradient method (infinitely many points give the measured change)

Each method is timed per graph. Writes out/graph_live_study.json (per-prompt rows with every
tested unit's measured change and predictions, the per-set means, timings) after every graph.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from workbench import Session
from workbench.graphs import build_graph, contrastive_graph
from workbench.graphs.contrastive import contrastive_faithfulness
from workbench.graphs.edges import total_derivatives
from workbench.graphs.faithfulness import faithfulness, spearman
from workbench.graphs.frozen import freeze
from workbench.saes.tasks import load_task

# the bridge warns once per edited norm hook that it rebuilds the output from the hooked values
warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")

PARTS = ("attn", "norm", "gate")
VARIANTS = {  # name -> parts held fixed in the real model's backward pass
    "live": (),
    "attn_frozen": ("attn",), "norm_frozen": ("norm",), "gate_frozen": ("gate",),
    "attn_live": ("norm", "gate"), "norm_live": ("attn", "gate"), "gate_live": ("attn", "norm"),
    "hooks_frozen": PARTS,
}
METHODS = ("graph", "frozen", *VARIANTS, "ig1", "ig4")
IG_POINTS = 4


def real_grads(s: Session, ids: list[int], tid: int, fid: int | None, fixed: tuple[str, ...]) -> torch.Tensor:
    """dM/dm [L P d_mlp] in the real model (M = logit(tid) [- logit(fid)] at the last position),
    with the parts in `fixed` detached in the forward (values unchanged, no gradient through them)."""
    L, P = s.n_layers, len(ids)
    deltas = [torch.zeros(1, P, s.d_mlp, requires_grad=True) for _ in range(L)]

    def det(a, hook=None):
        return a.detach()

    hooks = []
    for layer in range(L):
        hooks.append((f"blocks.{layer}.mlp.hook_post", lambda a, hook=None, d=deltas[layer]: a + d))
        if "attn" in fixed:
            hooks.append((f"blocks.{layer}.attn.hook_pattern", det))
        if "norm" in fixed:
            hooks += [(f"blocks.{layer}.ln1.hook_scale", det), (f"blocks.{layer}.ln2.hook_scale", det)]
        if "gate" in fixed:
            hooks.append((f"blocks.{layer}.mlp.gate.hook_out", det))
    if "norm" in fixed:
        hooks.append(("ln_final.hook_scale", det))
    tokens = torch.tensor([ids], device=s.device)
    with torch.enable_grad(), s.hooks(hooks):
        lg = s.model(tokens, return_type="logits")[0, -1].float()
        metric = lg[tid] - (lg[fid] if fid is not None else 0.0)
        g = torch.autograd.grad(metric, deltas)
    return torch.stack([x[0] for x in g]).detach()


def ig_grads(s: Session, ids: list[int], tid: int, fid: int | None, units: list[tuple[int, int, int, float, float]],
             alphas: list[float], chunk: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """For every unit (layer, pos, index, m, v) and alpha: the real model's dM/dm_i with that unit
    alone set to v + alpha (m - v), and M itself there. Returns grads, metrics [n_units, n_alpha]."""
    rows = [(u, a) for u in range(len(units)) for a in range(len(alphas))]
    grads = torch.zeros(len(units), len(alphas))
    mets = torch.zeros(len(units), len(alphas))
    for c0 in range(0, len(rows), chunk):
        part = rows[c0:c0 + chunk]
        B = len(part)
        delta = torch.zeros(B, requires_grad=True)
        by_layer: dict[int, list[tuple[int, int, int, float]]] = {}
        for r, (u, a) in enumerate(part):
            layer, pos, idx, m, v = units[u]
            by_layer.setdefault(layer, []).append((r, pos, idx, v + alphas[a] * (m - v)))

        def make_hook(sel, delta):
            r = torch.tensor([x[0] for x in sel])
            p = torch.tensor([x[1] for x in sel])
            i = torch.tensor([x[2] for x in sel])
            val = torch.tensor([x[3] for x in sel])

            def hook(act, hook=None):
                act = act.clone()
                act[r, p, i] = (val + delta[r]).to(act.dtype)
                return act
            return hook

        hooks = [(f"blocks.{layer}.mlp.hook_post", make_hook(by_layer[layer], delta)) for layer in by_layer]
        tokens = torch.tensor([ids] * B, device=s.device)
        with torch.enable_grad(), s.hooks(hooks):
            lg = s.model(tokens, return_type="logits")[:, -1].float()
            metric = lg[:, tid] - (lg[:, fid] if fid is not None else 0.0)
            (g,) = torch.autograd.grad(metric.sum(), [delta])
        for r, (u, a) in enumerate(part):
            grads[u, a] = float(g[r])
            mets[u, a] = float(metric[r].detach())
    return grads, mets


def _f(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def study(s, g, f, ids, tid, fid, m_clean, v_of, direction, timings, contrastive: bool) -> dict:
    """Predictions of every method for the units `f` tested; Spearman against f's measurements."""
    by_id = {nd.id: nd for nd in g.nodes}
    tested = list(f.node_ids) + list(f.sink_node_ids)
    measured = torch.cat([f.measured, f.sink_measured]) if f.sink_measured is not None else f.measured
    graph_pred = torch.cat([f.predicted, f.sink_predicted]) if f.sink_predicted is not None else f.predicted
    units = []
    for nid in tested:
        nd = by_id[nid]
        m = float(m_clean[nd.layer, nd.pos, nd.index])
        units.append((nd.layer, nd.pos, nd.index, m, v_of(nd)))
    preds: dict[str, list[float]] = {"graph": [float(x) for x in graph_pred]}

    t = time.perf_counter()
    fz = freeze(s, ids)
    td = total_derivatives(fz, direction)
    timings["frozen"] = time.perf_counter() - t
    preds["frozen"] = [(v - m) * float(td[la, p, i]) for la, p, i, m, v in units]
    check = {}
    if not contrastive and f.predicted_frozen is not None and len(f.predicted_frozen):
        check["frozen_vs_library_max_abs"] = float((torch.tensor(preds["frozen"][:len(f.node_ids)])
                                                    - f.predicted_frozen).abs().max())
    grads = {}
    for name, fixed in VARIANTS.items():
        t = time.perf_counter()
        grads[name] = real_grads(s, ids, tid, fid, fixed)
        timings[name] = time.perf_counter() - t
        preds[name] = [(v - m) * float(grads[name][la, p, i]) for la, p, i, m, v in units]
    check["hooks_frozen_vs_frozen_rel_err"] = float((grads["hooks_frozen"] - td).norm() / td.norm())

    if units:
        mids = [(k + 0.5) / IG_POINTS for k in range(IG_POINTS)]
        alphas = [0.5, *mids, 0.0]  # 0.0: the ablation itself, to check against the library's measurement
        t = time.perf_counter()
        gr, mets = ig_grads(s, ids, tid, fid, units, alphas)
        timings["ig_all"] = time.perf_counter() - t  # ig1 + ig4 + endpoint rows in one batch
        with torch.no_grad():
            lg = s.model(torch.tensor([ids]), return_type="logits")[0, -1].float()
        base = float(lg[tid] - (lg[fid] if fid is not None else 0.0))
        preds["ig1"] = [(v - m) * float(gr[j, 0]) for j, (_, _, _, m, v) in enumerate(units)]
        preds["ig4"] = [(v - m) * float(gr[j, 1:1 + IG_POINTS].mean()) for j, (_, _, _, m, v) in enumerate(units)]
        check["ig_endpoint_vs_measured_max_abs"] = float((mets[:, -1] - base - measured).abs().max())
    else:
        preds["ig1"], preds["ig4"] = [], []
    n = len(f.node_ids)
    meas = [float(x) for x in measured]
    out_units = []
    for j, nid in enumerate(tested):
        la, p, i, m, v = units[j]
        out_units.append({"id": nid, "layer": la, "pos": p, "neuron": i, "token": g.tokens[p], "m": m, "ablated_to": v,
                          "measured": meas[j], **{k: preds[k][j] for k in METHODS}})
    sp = {k: _f(spearman(torch.tensor(preds[k][:n]), torch.tensor(meas[:n]))) for k in METHODS}
    sp_sink = {k: _f(spearman(torch.tensor(preds[k][n:]), torch.tensor(meas[n:]))) for k in METHODS}
    return {"n_units": n, "n_sink_units": len(tested) - n, "spearman": sp, "spearman_sink": sp_sink,
            "checks": check, "units": out_units}


def summarize(rows: list[dict], key: str) -> dict:
    """Per method: mean / median of the per-graph Spearman, graphs >= 0.7, the mean over graphs
    with >= 5 tested units (3-4 units give coarse values), and the Spearman of all the set's
    tested units pooled (one ranking across graphs)."""
    sink = key == "spearman_sink"
    out = {}
    for k in METHODS:
        v = [r[key][k] for r in rows if r[key].get(k) is not None]
        v5 = [r[key][k] for r in rows if r[key].get(k) is not None
              and (r["n_sink_units"] if sink else r["n_units"]) >= 5]
        us = [u for r in rows for u in (r["units"][r["n_units"]:] if sink else r["units"][:r["n_units"]])]
        pooled = spearman(torch.tensor([u[k] for u in us]), torch.tensor([u["measured"] for u in us])) if us else None
        out[k] = {"mean": sum(v) / len(v) if v else None, "median": statistics.median(v) if v else None,
                  "n": len(v), "n_ge_0.7": sum(x >= 0.7 for x in v),
                  "mean_n_units_ge_5": sum(v5) / len(v5) if v5 else None, "n_graphs_ge_5": len(v5),
                  "pooled": _f(pooled) if pooled is not None else None, "pooled_units": len(us)}
    return out


def means_of(rows_by_set: dict) -> dict:
    return {k: {"positions_ge_1": summarize(v, "spearman"), "sink": summarize(v, "spearman_sink"),
                "seconds_mean": {t: sum(r["seconds"][t] for r in v) / len(v) for t in v[0]["seconds"]}}
            for k, v in rows_by_set.items() if v}


def report(res: dict) -> None:
    fmt = lambda x: "  nan" if x is None else f"{x:+.3f}"  # noqa: E731
    print("mean Spearman vs measured ablation, per graph (positions >= 1 | sink units at position 0)")
    for kind, m in res["means"].items():
        print(f"\n{kind} (n={len(res['rows'][kind])})")
        for k in METHODS:
            p, q = m["positions_ge_1"][k], m["sink"][k]
            print(f"  {k:<13} {fmt(p['mean'])} (median {fmt(p['median'])}, {p['n_ge_0.7']}/{p['n']} >= 0.7; "
                  f"graphs with >= 5 units {fmt(p['mean_n_units_ge_5'])} (n={p['n_graphs_ge_5']}); pooled "
                  f"{fmt(p['pooled'])} over {p['pooled_units']})   sink {fmt(q['mean'])} (n={q['n']}; pooled "
                  f"{fmt(q['pooled'])} over {q['pooled_units']})")
        print("  seconds per graph: " + ", ".join(f"{t}={v:.2f}" for t, v in m["seconds_mean"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-facts", type=int, default=20)
    ap.add_argument("--n-ioi", type=int, default=20)
    ap.add_argument("--ioi-pool", type=int, default=20,
                    help="load_task n (graph_results.py loads n = its --n-ioi, 20; the pairs depend on it)")
    ap.add_argument("--max-nodes", type=int, default=150)
    ap.add_argument("--faithfulness-nodes", type=int, default=10)
    ap.add_argument("--no-contrastive", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/graph_live_study.json")
    ap.add_argument("--summarize", metavar="JSON",
                    help="recompute and print the means of an earlier run's JSON (rewrites its 'means'); no model")
    a = ap.parse_args(argv)
    if a.summarize:
        res = json.loads(Path(a.summarize).read_text())
        res["means"] = means_of(res["rows"])
        Path(a.summarize).write_text(json.dumps(res, indent=1))
        report(res)
        return 0
    torch.set_num_threads(a.threads)
    t_start = time.time()
    s = Session.load(device="cpu")
    facts = json.loads(Path("data/labels/facts.json").read_text())
    fact_rows = []
    for fa in facts:
        try:
            s.token_id(" " + fa["answer"])
        except Exception:
            continue
        fact_rows.append(fa)
    fact_rows = fact_rows[: a.n_facts]
    task = load_task("ioi", s, None, n=max(a.ioi_pool, a.n_ioi)) if a.n_ioi else None
    n_ioi = min(a.n_ioi, len(task)) if task is not None else 0
    settings = {"max_nodes": a.max_nodes}
    res = {"model": s.name, "device": "cpu", "threads": a.threads,
           "settings": {**settings, "faithfulness_nodes": a.faithfulness_nodes, "ig_points": IG_POINTS,
                        "other": "GraphConfig defaults"},
           "host": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()},
           "methods": METHODS, "rows": {"facts": [], "ioi": [], "ioi_contrastive": []}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        res["means"] = means_of(res["rows"])
        res["wall_seconds"] = time.time() - t_start
        res["load_at_end"] = os.getloadavg()
        out.write_text(json.dumps(res, indent=1))

    def show(r):
        sp = r["spearman"]
        print(f"{r['set']:<9} {r['prompt'][:44]!r:<48} n={r['n_units']:<2} sink={r['n_sink_units']:<2} "
              + " ".join(f"{k}={'  nan' if sp[k] is None else f'{sp[k]:+.2f}'}" for k in
                         ("graph", "frozen", "live", "attn_live", "norm_live", "gate_live", "ig1", "ig4"))
              + f"  chk={r['checks']}  t_graph={r['seconds']['graph_build']:.1f}s", flush=True)

    W_U = None
    for i in range(max(len(fact_rows), n_ioi)):
        jobs = []
        if i < len(fact_rows):
            jobs.append(("facts", fact_rows[i]["prompt"], " " + fact_rows[i]["answer"], None, None))
        if i < n_ioi:
            tgt = s.to_str_tokens([task.correct[i][0]])[0]
            foil = s.to_str_tokens([task.wrong[i][0]])[0]
            jobs.append(("ioi", task.clean[i], tgt, foil, None))
            if not a.no_contrastive:
                jobs.append(("ioi_contrastive", task.clean[i], tgt, foil, task.corrupt[i]))
        for kind, prompt, tgt, foil, corrupt in jobs:
            timings = {}
            tid = s.token_id(tgt)
            t = time.perf_counter()
            if corrupt is None:
                g = build_graph(s, prompt, target=tgt, progress=False, **settings, faithfulness_nodes=0)
            else:
                g = contrastive_graph(s, prompt, corrupt, tgt, foil, progress=False, **settings,
                                      faithfulness_nodes=0)
            timings["graph_build"] = time.perf_counter() - t
            ids = list(g.token_ids)
            fzc = freeze(s, ids)
            W_U = fzc.weights.W_U
            t = time.perf_counter()
            if corrupt is None:
                f = faithfulness(s, g, a.faithfulness_nodes, factor=0.0, progress=False)
                fid, direction = None, W_U[tid]
                v_of = lambda nd: 0.0  # noqa: E731
            else:
                fid = s.token_id(foil)
                fc = freeze(s, corrupt)
                f = contrastive_faithfulness(s, g, fc.coeffs, tid, fid, a.faithfulness_nodes, False)
                direction = W_U[tid] - W_U[fid]
                v_of = lambda nd, fc=fc: float(fc.coeffs[nd.layer, nd.pos, nd.index])  # noqa: E731
            timings["ablation_measured"] = time.perf_counter() - t
            r = {"set": kind, "prompt": prompt, "target": tgt, "foil": foil, "corrupt": corrupt,
                 "library_faithfulness_spearman": _f(f.spearman),
                 "library_faithfulness_spearman_sink": _f(f.sink_spearman)}
            r.update(study(s, g, f, ids, tid, fid, fzc.coeffs, v_of, direction, timings, corrupt is not None))
            r["seconds"] = timings
            res["rows"][kind].append(r)
            show(r)
            save()
    save()
    report(res)
    print(f"wall {time.time() - t_start:.0f} s")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
