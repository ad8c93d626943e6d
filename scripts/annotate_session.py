"""One-off refactor helper: annotate bare `session` parameters as `Session` and import it.

    python scripts/annotate_session.py [FILE ...]   # rewrites files in place (default: all), prints a count
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PKGS = ("workbench", "editing", "probes", "widgets")
SKIP = {"workbench/session.py", "workbench/models.py", "workbench/errors.py", "workbench/_types.py"}


def import_line(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    if rel.parts[0] == "workbench":
        depth = len(rel.parts) - 1
        return f"from {'.' * depth}session import Session"
    return "from workbench.session import Session"


def rewrite(path: Path, root: Path) -> int:
    src = path.read_text()
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    edits = []  # (line, col, text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            pos = args.posonlyargs + args.args + args.kwonlyargs
            defaults = dict(zip([a.arg for a in (args.posonlyargs + args.args)][::-1][:len(args.defaults)],
                                args.defaults[::-1]))
            for a in pos:
                if a.arg == "session" and a.annotation is None:
                    d = defaults.get("session")
                    none = isinstance(d, ast.Constant) and d.value is None
                    edits.append((a.lineno, a.end_col_offset, ": Session | None" if none else ": Session"))
    if not edits:
        return 0
    for ln, col, text in sorted(edits, reverse=True):
        line = lines[ln - 1]
        lines[ln - 1] = line[:col] + text + line[col:]
    out = "".join(lines)
    imp = import_line(path, root)
    if not re.search(r"^from \S*session import .*\bSession\b", out, re.M):
        body = ast.parse(out).body
        last = 0
        for n in body:
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                last = n.end_lineno
            elif last and not isinstance(n, ast.Expr):
                break
        ls = out.splitlines(keepends=True)
        ls.insert(last, imp + "\n")
        out = "".join(ls)
    path.write_text(out)
    return len(edits)


def main() -> None:
    root = Path(".").resolve()
    files = [Path(f).resolve() for f in sys.argv[1:]] or [p for pkg in PKGS for p in sorted((root / pkg).rglob("*.py"))]
    total = 0
    for p in files:
        if str(p.relative_to(root)) in SKIP or "cli" in p.relative_to(root).parts[:2]:
            continue
        total += rewrite(p, root)
    print(f"annotated {total} session parameters")


main()
