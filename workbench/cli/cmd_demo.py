"""``workbench demo``: the main job on the embedded default model (what `make demo` runs).

Runs the default probe battery (probes/batteries/default.toml: linear probes with control tasks
on every layer, logit-lens knowledge probes, FFN memory tables, an SAE and ROME edits) and
writes OUT/default.json and OUT/default.html, the project's front page. Finished probes are
reused on a rerun (--force reruns them). Output fields: docs/cli.md, `workbench battery`.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "probes" / "batteries" / "default.toml"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the default probe battery and write its HTML report",
                       description=__doc__)
    p.add_argument("--out", default="out/demo", help="output folder (JSON, HTML, cache)")
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="battery spec (default: the default battery)")
    p.add_argument("--force", action="store_true", help="rerun probes that have cached results")
    p.add_argument("--device", default=None, help="override the spec's device (auto, cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from probes.runner import results_paths, run_battery
    from probes.spec import load_spec

    spec = load_spec(args.spec)
    if args.device:
        spec = dataclasses.replace(spec, device=args.device)
    res = run_battery(spec, args.out, force=args.force, progress=not args.no_progress)
    json_path, html_path = results_paths(spec, args.out)
    c = res["counts"]
    print(f"demo ({spec.name} battery on {res['model']['name']}): {c['ran']} probes ran, "
          f"{c['cached']} reused, {c['failed']} failed in {res['timings']['total_s']:.1f} s")
    for p in res["probes"]:
        if p["status"] == "failed":
            print(f"  {p['name']}: {p['error']}")
    print(f"json: {json_path}")
    print(f"report: {html_path}")
    return 1 if c["failed"] else 0
