"""Scripted probe batteries: specs, scikit-learn probes, metrics and HTML reports.

    from probes import load_spec, run_battery
    res = run_battery(load_spec("probes/batteries/default.toml"), "out/battery")

Modules: spec (TOML specs, validated before any model loads), registry (probe kinds), runner
(cache, JSON, HTML), linear (probes + control tasks), labels (project label sets), knowledge
(logit-lens facts), memory (FFN memory tables), edit (ROME evaluation), sae (SAE metrics),
report (HTML), context (lazy session, shared captures), commands (``workbench battery`` and
``workbench demo``), ray_battery (batteries as Ray tasks). Names load lazily, so the command
line's argument checks run before torch is imported.
"""

from __future__ import annotations

import importlib
from pathlib import Path as _Path

SCHEMA_PATH = _Path(__file__).with_name("schema.json")

_NAMES = {
    "registry": ["Param", "ProbeKind", "SpecError", "UnknownProbeKind", "get_kind", "kinds",
                 "register_kind"],
    "runner": ["SCHEMA_VERSION", "results_paths", "run_battery"],
    "spec": ["BatterySpec", "ProbeSpec", "load_spec", "parse_spec"],
}
_WHERE = {name: mod for mod, names in _NAMES.items() for name in names}

__all__ = sorted([*_WHERE, "SCHEMA_PATH"])


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
