"""Choose MEMIT's and AlphaEdit's settings from a sweep on held-out cases (scripts/edit_sweep.sh).

    python scripts/pick_edit_settings.py OUT "name|flags" ...

Reads OUT/<name>/summary.json of each variant (a variant killed before its summary is left out
and said so), prints a markdown table, and writes OUT/pick.env with MEMIT_ARGS and AE_ARGS: the
variant's flags less --method / --batch. The rule, fixed before any run:

- admissible: neighbourhood at most 3 points below the unedited model's, and perplexity on held
  text up by under 5% (the issue's bound);
- MEMIT: the admissible variant with the largest efficacy + paraphrase;
- AlphaEdit: the admissible variant with the largest efficacy + paraphrase + the first batch's
  efficacy at the end;
- none admissible: the one with the best neighbourhood (the least damage).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def _flags(flags: str) -> str:
    parts = shlex.split(flags)
    keep, skip = [], False
    for p in parts:
        if skip:
            skip = False
            continue
        if p in ("--method", "--batch"):
            skip = True
            continue
        keep.append(p)
    return " ".join(keep)


def main() -> None:
    out = Path(sys.argv[1])
    rows = []
    for v in sys.argv[2:]:
        name, flags = v.split("|", 1)
        f = out / name / "summary.json"
        if not f.exists():
            print(f"{name}: no summary (killed or failed; see {out / (name + '.log')})")
            continue
        s = json.loads(f.read_text())
        e = s.get("edited", {})
        u = s.get("unedited", {})
        ppl = (s["perplexity_after"] / s["perplexity_before"] - 1) if s.get("perplexity_before") else None
        rows.append({"name": name, "method": name.split("-")[0], "flags": _flags(flags),
                     "efficacy": s["efficacy"], "paraphrase": s["paraphrase"],
                     "neighborhood": s["neighborhood"], "nb_unedited": u.get("neighborhood"),
                     "first_at_end": s.get("first_batch_efficacy_at_end"),
                     "at_edit": e.get("efficacy_at_edit"), "ppl_up": ppl, "n": s["n"],
                     "known": (e.get("known_accuracy_before"), e.get("known_accuracy_after"))})
    print("| variant | n | efficacy | paraphrase | neighbourhood (unedited) | ppl up | first batch at end | at edit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ppl = "" if r["ppl_up"] is None else f"{100 * r['ppl_up']:+.1f}%"
        print(f"| {r['name']} | {r['n']} | {r['efficacy']:.1f} | {r['paraphrase']:.1f} | "
              f"{r['neighborhood']:.1f} ({r['nb_unedited']:.1f}) | {ppl} | {r['first_at_end'] or ''} | "
              f"{r['at_edit'] or ''} |")
    env = []
    for method, var in (("memit", "MEMIT_ARGS"), ("alphaedit", "AE_ARGS")):
        cand = [r for r in rows if r["method"] == method]
        if not cand:
            continue
        ok = [r for r in cand if r["neighborhood"] >= r["nb_unedited"] - 3
              and r["ppl_up"] is not None and r["ppl_up"] < 0.05]

        def score(r, method=method):
            held = (r["first_at_end"] or 0) if method == "alphaedit" else 0
            return r["efficacy"] + r["paraphrase"] + held

        best = max(ok, key=score) if ok else max(cand, key=lambda r: r["neighborhood"])
        print(f"{method}: {best['name']} ({'admissible' if ok else 'none admissible: least damage'})")
        env.append(f'{var}="{best["flags"]}"')
    (out / "pick.env").write_text("\n".join(env) + "\n")
    print((out / "pick.env").read_text())


if __name__ == "__main__":
    main()
