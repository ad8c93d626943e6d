"""``workbench circuits``: attention-head circuits from discrete SAE codes vs activation patching.

    workbench circuits --task ioi --data ../shared/data/circuits --prompts 32 --out out/circuits

Per task: per-head SAEs on head outputs at the last token (positive = clean prompts, negative
= corrupt ones), heads ranked by the share of positive codes no negative uses; ground truth by
patching each head from the corrupt run; precision and recall of the top heads; both runtimes.
Beside the SAE method, attribution patching (`workbench.graphs.heads`: each head's patching
effect estimated from one clean backward and one corrupt forward per pair, with the real model's
gradient and with the graph's frozen one) is scored against the same ground truth.
Tasks whose data is absent or filtered empty for the tokenizer are reported as skipped.
Writes OUT/circuits.json (fields: docs/cli.md) and OUT/circuits.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench.arguments import add_model_args, check_model, load_session
from workbench.provenance import meta, write_json


def register(sub) -> None:
    p = sub.add_parser("circuits", help="head circuits from discrete SAE codes vs patching",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--task", action="append", choices=["ioi", "greaterthan", "docstring"],
                   help="task (repeatable; default all three)")
    p.add_argument("--data", default="../shared/data/circuits", help="prompt-set folder")
    p.add_argument("--prompts", type=int, default=32, help="prompt pairs per task")
    p.add_argument("--d-sae", type=int, default=32, help="latents per head SAE")
    p.add_argument("--k", type=int, default=1, help="active latents per code")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n-true", type=int, default=10, help="heads in the ground-truth circuit")
    p.add_argument("--out", default="out/circuits")
    p.set_defaults(func=run)


def run(args) -> int:
    from widgets.html.figures_sae import head_scores_heatmap
    from widgets.html.report import HtmlReport
    from workbench.graphs.heads import compare_heads, head_importance
    from workbench.saes.circuits import CircuitConfig, find_circuit
    from workbench.saes.tasks import TaskUnavailable, load_task

    cfg = CircuitConfig(d_sae=args.d_sae, k=args.k, steps=args.steps, n_true=args.n_true)
    check_model(args)
    s = load_session(args)
    out = Path(args.out)
    rep = HtmlReport("Circuits from discrete SAE codes", f"model {s.name}")
    tasks: dict[str, dict[str, Any]] = {}
    for name in args.task or ["ioi", "greaterthan", "docstring"]:
        try:
            task = load_task(name, s, args.data, n=args.prompts)
        except TaskUnavailable as exc:
            tasks[name] = {"skipped": str(exc)}
            print(f"{name}: skipped ({exc})")
            continue
        r = find_circuit(s, task, cfg)
        tasks[name] = r.to_dict()
        hi = head_importance(s, task, progress=False)
        ap: dict[str, dict[str, Any]] = {}
        for which, sc in (("live", hi.live), ("frozen", hi.frozen)):
            c = compare_heads(sc, r.importance, cfg.n_true)
            ap[which] = {"precision": c.precision, "recall": c.recall, "spearman": c.spearman,
                         "predicted_heads": [list(h) for h in c.predicted]}
        tasks[name]["attribution_patching"] = {**ap, "seconds": hi.seconds, "n_pairs": hi.n_pairs}
        print(f"{name}: precision {r.precision:.2f} recall {r.recall:.2f}  "
              f"SAE {r.sae_seconds:.1f} s  patching {r.patching_seconds:.1f} s  |  attribution patching: "
              f"precision {ap['live']['precision']:.2f} (frozen {ap['frozen']['precision']:.2f}), Spearman over "
              f"all heads {ap['live']['spearman']:+.2f} (frozen {ap['frozen']['spearman']:+.2f}), {hi.seconds:.1f} s")
        rep.heading(name).table([{k: v for k, v in tasks[name].items() if not isinstance(v, (list, dict))}])
        rep.table([{"method": f"attribution patching ({w})", "precision": ap[w]["precision"],
                    "recall": ap[w]["recall"], "spearman_all_heads": ap[w]["spearman"],
                    "seconds (both)": hi.seconds} for w in ("live", "frozen")])
        rep.figure(head_scores_heatmap(r.code_scores.tolist(), r.importance.tolist(), name))
    data = {"meta": meta(s), "config": vars(cfg), "tasks": tasks}
    write_json(out / "circuits.json", data)
    rep.save(out / "circuits.html")
    print(f"json: {out / 'circuits.json'}\nhtml: {out / 'circuits.html'}")
    return 0
