"""The one-way house, read from the code (ast): the library imports no face, no two files import
each other.

Flow: session -> hooks -> analyses -> faces. The library is `workbench/` (its command-line
dispatcher `workbench.cli` apart) and `editing/`; the faces are `widgets/` (views, `widgets.html`
rendering), `probes/` (batteries) and the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "editing", "probes", "widgets")
FACES = ("widgets", "probes", "workbench.cli")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            mod = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[mod.removesuffix(".__init__")] = p
    return out


def imports_of(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module `mod` imports (anywhere in the file: top level, functions, TYPE_CHECKING)."""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                found.add(sub if sub in known else target)
    return {f for f in found if f}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def _is(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_modules_found():
    g = graph()
    assert len(g) > 80 and "workbench.session" in g and "widgets.html.report" in g


def test_library_imports_no_face():
    bad = []
    for mod, deps in graph().items():
        library = (_is(mod, "workbench") and not _is(mod, "workbench.cli")) or _is(mod, "editing")
        if not library:
            continue
        bad += [f"{mod} imports {d}" for d in sorted(deps) if any(_is(d, f) for f in FACES)]
    assert not bad, "the library imports a front end:\n" + "\n".join(bad)


def test_dispatcher_knows_no_face():
    deps = set().union(*(d for m, d in graph().items() if _is(m, "workbench.cli")))
    assert not [d for d in deps if any(_is(d, f) for f in ("widgets", "probes", "editing"))]


def test_html_rendering_imports_no_ipywidgets():
    g = graph()
    bad = [f"{m} imports {d}" for m, deps in g.items() if _is(m, "widgets.html") or _is(m, "probes")
           for d in deps if _is(d, "ipywidgets") or (_is(d, "widgets") and not _is(d, "widgets.html"))]
    assert not bad, "\n".join(bad)


def test_no_two_files_import_each_other():
    g = graph()
    circles = sorted({tuple(sorted((a, b))) for a, deps in g.items() for b in deps
                      if b in g and a != b and a in g[b]})
    assert not circles, f"two-file import circles: {circles}"


def test_checker_sees_a_violation(tmp_path):
    """The reader catches an upward import inside a function (it cannot pass vacuously)."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from widgets.html import export_html\n    from ..probes import x\n")
    found = imports_of("workbench.sub.m", p, {})
    assert "widgets.html" in found and "workbench.probes" in found
