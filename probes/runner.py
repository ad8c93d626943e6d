"""Run a battery: validate, run each probe (or reuse its cached result), write JSON and HTML.

Each probe's result is cached under ``OUT/cache/<probe key>.json``, where the key hashes the
model, the battery settings (corpus, max_tokens, window, seed, dtype) and the probe's own spec;
a rerun reuses every finished probe unless ``force``. The model is loaded only when some probe
has to run. Outputs: ``OUT/<battery name>.json`` (schema: probes/schema.json) and
``OUT/<battery name>.html`` (standalone, opens offline).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.session import Session

from .context import ProbeContext
from .registry import get_kind
from .spec import BatterySpec, load_spec

__all__ = ["run_battery", "SCHEMA_VERSION", "results_paths"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def results_paths(spec: BatterySpec, out_dir: str | Path) -> tuple[Path, Path]:
    """(JSON path, HTML path) a battery writes."""
    out = Path(out_dir)
    return out / f"{spec.name}.json", out / f"{spec.name}.html"


def _model_info(session: Session) -> dict[str, Any]:
    from workbench.provenance import meta

    return meta(session)["model"]


def run_battery(spec: BatterySpec | str | Path, out_dir: str | Path, force: bool = False,
                session: Session | None = None, progress: bool = True) -> dict[str, Any]:
    """Run `spec` and write its results to `out_dir`; returns the results dict (as written).

    Args:
        spec: a `BatterySpec` or the path of a TOML spec (validated before anything runs).
        out_dir: where the JSON, the HTML and the probe cache go.
        force: rerun every probe even when a cached result exists.
        session: an already loaded session to use instead of loading ``spec.model``.
        progress: show progress bars.
    """
    from workbench.provenance import meta, write_json

    from .report import render_battery

    if not isinstance(spec, BatterySpec):
        spec = load_spec(spec)
    t_start = time.perf_counter()
    out = Path(out_dir)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed % (2**32))
    ctx = ProbeContext(spec, session=session, progress=progress)
    model_info: dict[str, Any] | None = None
    records = []
    bar = tqdm(spec.probes, desc=f"battery {spec.name}", disable=not progress)
    for probe in bar:
        bar.set_postfix_str(probe.name)
        key = spec.probe_key(probe)
        path = cache / f"{key}.json"
        rec: dict[str, Any] = {"name": probe.name, "kind": probe.kind, "key": key,
                               "params": probe.params}
        if path.exists() and not force:
            cached = json.loads(path.read_text(encoding="utf-8"))
            rec.update(status="cached", seconds=cached["seconds"], finished=cached["finished"],
                       result=cached["result"], error=None)
            model_info = model_info or cached.get("model")
            records.append(rec)
            log.info("probe %s: reusing %s", probe.name, path)
            continue
        kind = get_kind(probe.kind)
        t0 = time.perf_counter()
        try:
            result = kind.run(ctx, dict(probe.params))
        except Exception as exc:  # one probe failing does not lose the others
            if not isinstance(exc, WorkbenchError):
                log.error("probe %s failed:\n%s", probe.name, traceback.format_exc())
            rec.update(status="failed", seconds=time.perf_counter() - t0,
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), result=None,
                       error=f"{type(exc).__name__}: {exc}")
            records.append(rec)
            continue
        seconds = time.perf_counter() - t0
        model_info = _model_info(ctx.session)
        rec.update(status="ran", seconds=seconds, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   result=result, error=None)
        write_json(path, {"key": key, "model": model_info, "spec": probe.to_dict(),
                          "seconds": seconds, "finished": rec["finished"], "result": result})
        records.append(rec)
    if model_info is None and ctx.loaded:
        model_info = _model_info(ctx.session)
    timings = {"total_s": time.perf_counter() - t_start, **ctx.timings,
               "probes": {r["name"]: r["seconds"] for r in records}}
    info = meta(None)
    results = {
        "schema_version": SCHEMA_VERSION,
        "battery": spec.name,
        "title": spec.title or spec.name,
        "description": spec.description,
        "spec_hash": spec.hash(),
        "spec_path": spec.source,
        "spec": spec.to_dict(),
        "model": model_info or {"name": spec.model},
        "seed": spec.seed,
        "versions": {k: info[k] for k in ("workbench_version", "torch", "transformer_lens", "python")},
        "created": info["created"],
        "timings": timings,
        "counts": {s: sum(r["status"] == s for r in records) for s in ("ran", "cached", "failed")},
        "probes": records,
    }
    json_path, html_path = results_paths(spec, out)
    write_json(json_path, results)
    results = json.loads(json_path.read_text(encoding="utf-8"))  # exactly what was written
    render_battery(results).save(html_path)
    return results
