"""The registry of probe kinds: what each kind is called, its parameters, how it runs and renders.

A kind declares its parameters (`Param`: type, default or required, allowed choices), so a
battery spec is checked completely before any model is loaded. Built-in kinds register when
their module is imported; `kinds()` imports them on first use.

    @register_kind("linear", params={"label": Param(str, choices=...)}, doc="...")
    def run_linear(ctx, params) -> dict: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError, choices

__all__ = ["Param", "ProbeKind", "REQUIRED", "SpecError", "UnknownProbeKind", "register_kind",
           "get_kind", "kinds"]

REQUIRED: Any = object()
BUILTIN = ("probes.linear_kind", "probes.knowledge", "probes.sae", "probes.memory", "probes.edit")


class SpecError(WorkbenchError):
    """A battery spec that cannot run: unknown key or probe kind, missing or ill-typed field."""


class UnknownProbeKind(SpecError):
    """A probe `kind` that no module registered."""


@dataclass(frozen=True)
class Param:
    """One probe parameter.

    Args:
        type: accepted Python type(s) after TOML parsing (int is accepted where float is).
        default: the value when absent; `REQUIRED` makes it a required field.
        choices: allowed values (for str parameters), or None.
        doc: one line shown in errors and docs.
    """

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class ProbeKind:
    """A registered probe kind.

    Args:
        name: the `kind` string used in specs.
        run: ``run(ctx, params) -> dict`` (JSON-ready result) given a `ProbeContext`.
        params: parameter name -> `Param`.
        doc: one paragraph describing what the probe measures.
        available: ``() -> None`` when the kind can run, else the reason it cannot (a missing
            module from another part of the workbench).
        check: ``check(params, where)``: extra static validation (no model), raising SpecError.

    A kind's HTML section is rendered apart from it, by `probes.report` through the project's one
    result -> HTML dispatch (`widgets.html.register_renderer`, keyed by ``"probe:<name>"``).
    """

    name: str
    run: Callable[[Any, dict], dict]
    params: dict[str, Param]
    doc: str = ""
    available: Callable[[], str | None] = lambda: None
    check: Callable[[dict, str], None] | None = None


_KINDS: dict[str, ProbeKind] = {}
_LOADED = False


def register_kind(name: str, params: dict[str, Param], doc: str = "",
                  available: Callable[[], str | None] | None = None,
                  check: Callable[[dict, str], None] | None = None):
    """Decorator registering ``run(ctx, params) -> dict`` as probe kind `name`."""

    def deco(fn):
        _KINDS[name] = ProbeKind(name, fn, dict(params), doc, available or (lambda: None), check)
        return fn

    return deco


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in BUILTIN:
            importlib.import_module(mod)


def kinds() -> dict[str, ProbeKind]:
    """All registered kinds (built-in ones imported on first call)."""
    _load_builtin()
    return dict(_KINDS)


def get_kind(name: str, where: str = "") -> ProbeKind:
    """The kind called `name`, or UnknownProbeKind naming it and the known kinds."""
    known = kinds()
    if name not in known:
        raise UnknownProbeKind(f"{where}unknown probe kind={name!r}; known kinds: {choices(sorted(known))}")
    return known[name]
