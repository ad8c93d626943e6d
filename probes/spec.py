"""Battery specs: a TOML file naming the model, the corpus and a list of probes.

Everything is validated when the spec is read, before any model is loaded: unknown tables and
keys, missing fields, unknown probe kinds, wrong types and choices, and data paths that do not
exist all raise `SpecError` naming the value and what is valid.

    [battery]
    name = "default"
    model = "smollm2-135m"          # embedded name, model directory, or hub name
    corpus = "data/corpus/tiny_corpus.txt"   # or a list: the first path that exists is used
    max_tokens = 20000              # corpus tokens for corpus-based probes
    seed = 0

    [[probe]]
    kind = "linear"
    name = "next_is_number"         # optional; default "<kind>_<index>"
    label = "next_is_number"
    site = "resid_post"

Relative paths are looked up next to the spec file, then at the project root.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import choices

from .registry import SpecError, get_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["BatterySpec", "ProbeSpec", "load_spec", "parse_spec", "resolve_path", "PROJECT_ROOT"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]

BATTERY_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None),
    "model": (str, None),
    "title": (str, ""),
    "description": (str, ""),
    "device": (str, "auto"),
    "dtype": (str, "float32"),
    "seed": (int, 0),
    "corpus": ((str, list), "data/corpus/tiny_corpus.txt"),
    "max_tokens": (int, 20000),
    "window": (int, 128),
}
REQUIRED_BATTERY = ("name", "model")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a battery: its kind, unique name and validated parameters (defaults filled)."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""   # one sentence for the report: what the reader should see in this section

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "name": self.name, **self.params}
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class BatterySpec:
    """A validated battery.

    Args:
        name: short identifier (file names of the outputs).
        model, device, dtype: what `Session.load` gets.
        corpus: corpus path (resolved) for corpus-based probes; max_tokens, window: how much
            of it and in what windows.
        seed: seed of every random choice (splits, control tasks, sampling).
        probes: the probes, in run order.
        source: the file the spec came from, if any.
    """

    name: str
    model: str
    probes: tuple[ProbeSpec, ...]
    title: str = ""
    description: str = ""
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    corpus: str = ""
    max_tokens: int = 20000
    window: int = 128
    source: str | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise SpecError(f"[battery] dtype={self.dtype!r} is not one of {choices(DTYPES)}")
        if self.max_tokens < self.window:
            raise SpecError(f"[battery] max_tokens={self.max_tokens} is below window={self.window}")
        if self.window < 2:
            raise SpecError(f"[battery] window={self.window} must be >= 2")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what the results file stores and the hash covers)."""
        battery = {k: getattr(self, k) for k in BATTERY_KEYS}
        return {"battery": battery, "probe": [p.to_dict() for p in self.probes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> BatterySpec:
        return parse_spec(data, source)

    def settings(self) -> dict[str, Any]:
        """The battery-level settings every probe result depends on."""
        return {k: getattr(self, k) for k in ("model", "dtype", "seed", "corpus", "max_tokens",
                                              "window")}

    def hash(self) -> str:
        return stable_hash(self.to_dict())

    def probe_key(self, probe: ProbeSpec) -> str:
        """Cache key of one probe: the model and battery settings plus the probe's own spec."""
        return stable_hash({"settings": self.settings(), "probe": probe.to_dict()})


def stable_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_path(value: str, base: Path | None) -> Path | None:
    """An existing path for `value`: absolute, next to the spec, at the project root, or cwd."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    for root in ([base] if base else []) + [PROJECT_ROOT, Path.cwd()]:
        if (root / p).exists():
            return (root / p).resolve()
    return None


def load_spec(path: str | Path) -> BatterySpec:
    """Read and validate a TOML battery spec."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {str(path)!r} is not valid TOML: {exc}") from None
    return parse_spec(data, str(path.resolve()))


def _typecheck(value: Any, typ, where: str) -> Any:
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in types:
        raise SpecError(f"{where}={value!r} must be {' or '.join(t.__name__ for t in types)}")
    if not isinstance(value, types):
        raise SpecError(f"{where}={value!r} has type {type(value).__name__}; expected "
                        f"{' or '.join(t.__name__ for t in types)}")
    return value


def parse_spec(data: dict[str, Any], source: str | None = None) -> BatterySpec:
    """Validate spec data (as parsed from TOML) into a `BatterySpec`."""
    base = Path(source).parent if source else None
    unknown = set(data) - {"battery", "probe"}
    if unknown:
        raise SpecError(f"unknown table(s) {sorted(unknown)} in spec; valid tables: [battery], [[probe]]")
    if "battery" not in data or not isinstance(data["battery"], dict):
        raise SpecError("spec is missing the [battery] table (with fields 'name' and 'model')")
    bat = dict(data["battery"])
    for k in bat:
        if k not in BATTERY_KEYS:
            raise SpecError(f"unknown field {k!r} in [battery]; valid fields: {choices(BATTERY_KEYS)}")
    for k in REQUIRED_BATTERY:
        if k not in bat:
            raise SpecError(f"missing field {k!r} in [battery]")
    out: dict[str, Any] = {}
    for k, (typ, default) in BATTERY_KEYS.items():
        out[k] = _typecheck(bat[k], typ, f"[battery] {k}") if k in bat else default
    cands = out["corpus"] if isinstance(out["corpus"], list) else [out["corpus"]]
    if not cands or not all(isinstance(c, str) for c in cands):
        raise SpecError(f"[battery] corpus={out['corpus']!r} must be a path or a list of paths")
    found = next((f for f in (resolve_path(c, base) for c in cands) if f is not None), None)
    if found is None:
        raise SpecError(f"[battery] corpus={out['corpus']!r} does not exist (looked next to the "
                        f"spec, at {PROJECT_ROOT} and in the current directory)")
    out["corpus"] = str(found)
    raw_probes = data.get("probe", [])
    if not isinstance(raw_probes, list) or not raw_probes:
        raise SpecError("spec has no [[probe]] entries; add at least one")
    probes, names = [], set()
    for i, raw in enumerate(raw_probes):
        probes.append(_parse_probe(i, dict(raw), base))
        if probes[-1].name in names:
            raise SpecError(f"probe #{i} name={probes[-1].name!r} is used twice; names must be unique")
        names.add(probes[-1].name)
    return BatterySpec(probes=tuple(probes), source=source, **out)


def _parse_probe(i: int, raw: dict[str, Any], base: Path | None) -> ProbeSpec:
    if "kind" not in raw:
        raise SpecError(f"probe #{i} ({raw.get('name', 'unnamed')}) is missing field 'kind'")
    kind_name = _typecheck(raw.pop("kind"), str, f"probe #{i} kind")
    name = _typecheck(raw.pop("name", f"{kind_name}_{i}"), str, f"probe #{i} name")
    note = _typecheck(raw.pop("note", ""), str, f"probe #{i} note")
    where = f"probe #{i} {name!r} (kind {kind_name!r})"
    kind = get_kind(kind_name, where=f"probe #{i} {name!r}: ")
    for k in raw:
        if k not in kind.params:
            raise SpecError(f"{where}: unknown field {k!r}; valid fields: {choices(kind.params)}")
    params: dict[str, Any] = {}
    for k, p in kind.params.items():
        if k not in raw:
            if p.required:
                raise SpecError(f"{where} is missing field {k!r} ({p.doc})")
            params[k] = p.default
            continue
        v = _typecheck(raw[k], p.type, f"{where} {k}")
        if p.choices is not None and v not in p.choices:
            raise SpecError(f"{where} {k}={v!r} is not one of {choices(p.choices)}")
        if k.endswith("path") and isinstance(v, str) and v not in ("auto", ""):
            found = resolve_path(v, base)
            if found is None:
                raise SpecError(f"{where} {k}={v!r} does not exist")
            v = str(found)
        params[k] = v
    if kind.check is not None:
        kind.check(params, where)
    return ProbeSpec(kind_name, name, params, note)
