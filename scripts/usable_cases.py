"""Write the first N usable CounterFact records (objects the model's tokenizer can produce, new !=
true), less any record that gives an earlier one's subject and prompt another target (a batch
edit refuses such a pair: `editing.memit.check_requests`), to a file in the input's flat
format, so that runs split over processes (`workbench edit --skip K --n M`) partition exactly
the same cases as one run of `--n N`.

    python scripts/usable_cases.py ../shared/data/counterfact/counterfact-val.json 1000 out/cf1000.json
"""

from __future__ import annotations

import argparse
import json

from editing import load_counterfact, usable_cases
from workbench import Session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases")
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    session = Session.load(args.model, device="cpu")
    usable, skipped = usable_cases(session, load_counterfact(args.cases))
    seen: set[tuple[str, str]] = set()
    keep = set()
    for c in usable[: args.n]:
        key = (c.subject, c.prompt.replace("{}", c.subject))
        if key not in seen:
            seen.add(key)
            keep.add(c.case_id)
    raw = [r for r in json.load(open(args.cases, encoding="utf-8")) if r["case_id"] in keep]
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(raw, fh)
    print(f"{len(raw)} records: the first {args.n} usable ({skipped} skipped before them) less "
          f"{min(args.n, len(usable)) - len(raw)} that repeat a subject and prompt -> {args.out}")


if __name__ == "__main__":
    main()
