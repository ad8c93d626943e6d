"""Scripted probe batteries: specs, scikit-learn probes, metrics and HTML reports.

    from probes import load_spec, run_battery
    res = run_battery(load_spec("probes/batteries/default.toml"), "out/battery")

Modules: spec (TOML specs, validated before any model loads), registry (probe kinds), runner
(cache, JSON, HTML), linear (probes + control tasks), labels (project label sets), knowledge
(logit-lens facts), memory (FFN memory tables), edit (ROME evaluation), sae (SAE metrics),
report (HTML), context (lazy session, shared captures).
"""

from .registry import Param, ProbeKind, SpecError, UnknownProbeKind, get_kind, kinds, register_kind
from .runner import SCHEMA_VERSION, results_paths, run_battery
from .spec import BatterySpec, ProbeSpec, load_spec, parse_spec

__all__ = ["Param", "ProbeKind", "SpecError", "UnknownProbeKind", "get_kind", "kinds",
           "register_kind", "SCHEMA_VERSION", "results_paths", "run_battery", "BatterySpec",
           "ProbeSpec", "load_spec", "parse_spec", "SCHEMA_PATH"]

from pathlib import Path as _Path

SCHEMA_PATH = _Path(__file__).with_name("schema.json")
