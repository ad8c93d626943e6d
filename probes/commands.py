"""The probe batteries' commands: ``workbench battery`` and ``workbench demo``.

``workbench battery``: run a probe battery described in a TOML spec.

    workbench battery run probes/batteries/default.toml --out out/battery [--force]
    workbench battery kinds          # list probe kinds and their parameters

Writes OUT/<name>.json (fields: docs/cli.md, schema: probes/schema.json), OUT/<name>.html and a
per-probe cache under OUT/cache (reused on rerun unless --force).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SPEC = Path(__file__).resolve().parent / "batteries" / "default.toml"


def register_battery(sub) -> None:
    p = sub.add_parser("battery", help="run a scripted probe battery (TOML spec) to JSON + HTML",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="battery_command", metavar="ACTION")
    r = bsub.add_parser("run", help="run a battery spec")
    r.add_argument("spec", help="battery spec (TOML)")
    r.add_argument("--out", default="out/battery", help="output folder (JSON, HTML, cache)")
    r.add_argument("--force", action="store_true", help="rerun probes that have cached results")
    r.add_argument("--device", default=None, help="override the spec's device (auto, cpu, cuda)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    from workbench.distributed.cli import add_ray_args

    add_ray_args(r, grid=True)  # --ray [ADDRESS], --ray-workers, --models (workbench.distributed)
    r.set_defaults(func=run_battery_command)
    k = bsub.add_parser("kinds", help="list probe kinds and their parameters")
    k.set_defaults(func=list_kinds)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_battery_command(args) -> int:
    spec = _spec(args)  # validated before any model is loaded
    if args.ray is not None:  # probes (x models) as Ray tasks: probes.ray_battery
        from probes.ray_battery import battery_on_ray

        lines, status = battery_on_ray(args, spec)
        print("\n".join(lines))
        return status
    return _run(spec, args, lambda res, c: f"battery {spec.name}: {c['ran']} ran, {c['cached']} cached, "
                                          f"{c['failed']} failed in {res['timings']['total_s']:.1f} s",
                "html")


def _spec(args):
    """The battery spec named by ``args.spec`` (``--device`` applied), validated without a model."""
    import dataclasses

    from probes.spec import load_spec

    spec = load_spec(args.spec)
    return dataclasses.replace(spec, device=args.device) if args.device else spec


def _run(spec, args, headline, html_label: str) -> int:
    """Run `spec`, print a headline, the failed probes and the paths written; 1 if any failed."""
    from probes.runner import results_paths, run_battery

    res = run_battery(spec, args.out, force=args.force, progress=not args.no_progress)
    json_path, html_path = results_paths(spec, args.out)
    c = res["counts"]
    print(headline(res, c))
    for p in res["probes"]:
        if p["status"] == "failed":
            print(f"  {p['name']}: {p['error']}")
    print(f"json: {json_path}")
    print(f"{html_label}: {html_path}")
    return 1 if c["failed"] else 0


def list_kinds(args) -> int:
    from probes.registry import kinds

    for name, kind in sorted(kinds().items()):
        reason = kind.available()
        print(f"{name}{'' if reason is None else f'  (unavailable: {reason})'}")
        print(f"    {kind.doc}")
        for pname, prm in kind.params.items():
            default = "required" if prm.required else f"default {prm.default!r}"
            print(f"    {pname}: {prm.doc} ({default})")
    return 0


DEMO_DOC = """``workbench demo``: the main job on the embedded default model (what `make demo` runs).

Runs the default probe battery (probes/batteries/default.toml: linear probes with control tasks
on every layer, logit-lens knowledge probes, FFN memory tables, an SAE and ROME edits) and
writes OUT/default.json and OUT/default.html, the project's front page. Finished probes are
reused on a rerun (--force reruns them). Output fields: docs/cli.md, `workbench battery`.
"""


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the default probe battery and write its HTML report",
                       description=DEMO_DOC)
    p.add_argument("--out", default="out/demo", help="output folder (JSON, HTML, cache)")
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="battery spec (default: the default battery)")
    p.add_argument("--force", action="store_true", help="rerun probes that have cached results")
    p.add_argument("--device", default=None, help="override the spec's device (auto, cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    spec = _spec(args)
    return _run(spec, args, lambda res, c: f"demo ({spec.name} battery on {res['model']['name']}): "
                                          f"{c['ran']} probes ran, {c['cached']} reused, {c['failed']} "
                                          f"failed in {res['timings']['total_s']:.1f} s", "report")
