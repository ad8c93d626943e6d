"""Circuit tasks as clean/corrupt prompt pairs with answer tokens, from files or templates.

Prompt sets: the ACDC files (../shared/data/circuits, when given as `data_dir`), or, with
``data_dir=None``, prompts the project generates itself from the templates below (IOI templates
of Wang et al. 2022, the greater-than sentence of Hanna et al. 2023, docstring prompts in the
style of Heimersheim & Janiak 2023), seeded, in the same row formats, so every task has real
content on a fresh clone.

Each pair has the same number of tokens (patching needs aligned positions). The metric is the
logit difference at the last token: logit(correct) - mean logit(wrong answers).
- IOI: "When Mary and John went..., John gave a drink to" -> " Mary" vs " John"; the corrupt
  prompt replaces the repeated subject by a third name (no repeated name: no IOI signal).
- greater-than: "... from the year 1732 to 17" -> suffixes > 32 vs <= 32; corrupt year ends in
  01. With a tokenizer whose two-digit suffixes are single tokens (GPT-2) the answers are the
  suffixes; with a digit tokenizer (Llama, SmolLM2, Gemma) the next token is the tens digit:
  correct = digits above the start's tens digit (3 -> 4..9), wrong = digits below it (0..2).
- docstring: the ACDC docstring prompts; corrupt = the `random_doc` variant.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import WorkbenchError
from ..session import Session

__all__ = ["CircuitTask", "TaskUnavailable", "load_task", "template_rows", "TASKS"]

TASKS = ("ioi", "greaterthan", "docstring")


class TaskUnavailable(WorkbenchError):
    """The prompt set is absent, or no prompt survives filtering for this tokenizer."""


@dataclass(frozen=True)
class CircuitTask:
    """Aligned clean/corrupt prompts with one correct and several wrong answer ids per pair."""

    name: str
    clean: tuple[str, ...]
    corrupt: tuple[str, ...]
    correct: tuple[tuple[int, ...], ...]
    wrong: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.clean)


def _one(session: Session, text: str) -> int | None:
    ids = session.tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def _same_len(session: Session, a: str, b: str) -> bool:
    return len(session.encode(a)) == len(session.encode(b))


FILES = {"ioi": "ioi_prompts_acdc_seed0_n1000.json",
         "greaterthan": "greaterthan_prompts_untokfiltered_seed0_n1000.json",
         "docstring": "docstring_prompts_acdc_induction_n1000.json"}

NAMES = ("Mary", "John", "Tom", "James", "Anna", "Paul", "Sarah", "David", "Laura", "Mark",
         "Emma", "Peter", "Lucy", "Daniel", "Kate", "Robert", "Alice", "Michael", "Rose", "Jack")
PLACES = ("store", "park", "school", "garden", "restaurant", "office", "station", "hospital",
          "library", "market", "beach", "house")
OBJECTS = ("ring", "book", "drink", "bone", "basketball", "computer", "necklace", "kiwi",
           "letter", "snack", "bag", "key")
IOI_TEMPLATES = (
    "Then, {A} and {B} went to the {P}. {B} gave a {O} to",
    "When {A} and {B} got a {O} at the {P}, {B} decided to give it to",
    "After {A} and {B} went to the {P}, {B} gave a {O} to",
    "While {A} and {B} were working at the {P}, {B} gave a {O} to",
    "Friends {A} and {B} found a {O} at the {P}. {B} gave it to",
    "When {A} and {B} went to the {P}, {B} handed a {O} to",
)
GT_NOUNS = ("war", "expedition", "drought", "voyage", "dynasty", "siege", "project", "strike",
            "reign", "famine", "journey", "campaign")
DOC_WORDS = ("load", "size", "files", "last", "name", "data", "path", "mode", "value", "index",
             "count", "items", "user", "state", "text", "token", "shape", "color", "limit", "key",
             "node", "page", "port", "line", "time", "order", "group", "level", "score", "image")
DOC_DESC = ("the input", "a new value", "number of items", "current state", "old style",
            "main result", "unit type", "first page", "file system", "big number")


def template_rows(name: str, n: int, seed: int = 0) -> list[dict]:
    """`n` rows of task `name` in the ACDC file format, generated from the templates above.

    ioi: {"text": prompt + " " + IO, "IO", "S"}; greaterthan: {"prompt", "year"};
    docstring: {"clean_prompt", "corrupt_prompt": {"random_doc"}, "correct_answers",
    "wrong_answers"} (the corrupt prompt renames the documented parameters at random, so the
    next parameter cannot be read off the docstring).
    """
    rng = random.Random(seed)
    rows: list[dict] = []
    for _ in range(n):
        if name == "ioi":
            a, b = rng.sample(NAMES, 2)
            text = rng.choice(IOI_TEMPLATES).format(A=a, B=b, P=rng.choice(PLACES), O=rng.choice(OBJECTS))
            rows.append({"text": f"{text} {a}", "IO": a, "S": b})
        elif name == "greaterthan":
            year = rng.randint(11, 17) * 100 + rng.randint(2, 98)
            rows.append({"year": year, "prompt": f"The {rng.choice(GT_NOUNS)} lasted from the year "
                                                  f"{year} to the year {year // 100}"})
        elif name == "docstring":
            args = rng.sample(DOC_WORDS, 6)
            func, params, k = args[0], args[1:], rng.randint(2, 3)
            fake = rng.sample([w for w in DOC_WORDS if w not in args], k)
            descs = [rng.choice(DOC_DESC) for _ in range(k + 1)]

            def doc(names, params=params, func=func, descs=descs):
                head = f"def {func}(self, {', '.join(params)}):\n    \"\"\"{descs[-1]}\n\n"
                body = "".join(f"    :param {p}: {d}\n" for p, d in zip(names, descs))
                return head + body + "    :param"
            rows.append({"clean_prompt": doc(params[:k]), "corrupt_prompt": {"random_doc": doc(fake)},
                         "correct_answers": [" " + params[k]],
                         "wrong_answers": [" " + p for p in params if p != params[k]]})
        else:
            raise TaskUnavailable(f"task={name!r} is unknown; choose one of {', '.join(TASKS)}")
    return rows


def _ioi(session: Session, rows: list[dict], n: int, rng) -> list[tuple]:
    names = sorted({r["IO"] for r in rows} | {r["S"] for r in rows})
    names = [m for m in names if _one(session, " " + m) is not None]
    out = []
    for r in rows:
        io, s, text = r["IO"], r["S"], r["text"]
        if not text.endswith(" " + io):
            continue
        prompt = text[: -len(" " + io)]
        cut = prompt.find(" " + s, prompt.find(" " + s) + 1)
        c_io, c_s = _one(session, " " + io), _one(session, " " + s)
        if cut < 0 or c_io is None or c_s is None:
            continue
        other = rng.choice([m for m in names if m not in (io, s)])
        corrupt = prompt[:cut] + " " + other + prompt[cut + len(s) + 1:]
        if _same_len(session, prompt, corrupt):
            out.append((prompt, corrupt, (c_io,), (c_s,)))
        if len(out) >= n:
            break
    return out


def _greaterthan(session: Session, rows: list[dict], n: int, rng) -> list[tuple]:
    suffix = {i: _one(session, f"{i:02d}") for i in range(100)}
    digit = {i: _one(session, str(i)) for i in range(10)}
    two_digit = all(v is not None for v in suffix.values())
    if not two_digit and any(v is None for v in digit.values()):
        return []  # neither two-digit suffixes nor single digits are single tokens
    out = []
    for r in rows:
        yy = r["year"] % 100
        prompt = r["prompt"]
        corrupt = prompt.replace(str(r["year"]), f"{r['year'] // 100}01", 1)
        if yy < 2 or yy > 98 or not _same_len(session, prompt, corrupt):
            continue
        if two_digit:
            right, wrong = range(yy + 1, 100), range(0, yy + 1)
            out.append((prompt, corrupt, tuple(suffix[i] for i in right), tuple(suffix[i] for i in wrong)))
        else:
            # digit tokenizer: the next token is the end year's tens digit; digits above the
            # start's tens digit are surely greater, digits below surely smaller, its own is neither
            tens = yy // 10
            if not 1 <= tens <= 8:
                continue
            out.append((prompt, corrupt, tuple(digit[i] for i in range(tens + 1, 10)),
                        tuple(digit[i] for i in range(0, tens))))
        if len(out) >= n:
            break
    return out


def _docstring(session: Session, rows: list[dict], n: int, rng) -> list[tuple]:
    out = []
    for r in rows:
        c = _one(session, r["correct_answers"][0])
        wrong = tuple(w for w in (_one(session, t) for t in r["wrong_answers"]) if w is not None)
        corrupt = r["corrupt_prompt"]["random_doc"]
        if c is None or not wrong or not _same_len(session, r["clean_prompt"], corrupt):
            continue
        out.append((r["clean_prompt"], corrupt, (c,), wrong))
        if len(out) >= n:
            break
    return out


def load_task(name: str, session: Session, data_dir: str | Path | None = None, n: int = 64,
              seed: int = 0) -> CircuitTask:
    """Load `n` aligned pairs of task `name` ('ioi', 'greaterthan', 'docstring').

    `data_dir`: a folder with the ACDC prompt files, or None for the project's own templates
    (`template_rows`; 20 candidate rows per wanted pair, filtered for this tokenizer).
    """
    if name not in TASKS:
        raise TaskUnavailable(f"task={name!r} is unknown; choose one of {', '.join(TASKS)}")
    if data_dir is None:
        source = template_rows(name, 20 * n, seed)
    else:
        data = Path(data_dir)
        if not data.is_dir():
            raise TaskUnavailable(f"circuit data directory {str(data)!r} does not exist")
        try:
            source = json.loads((data / FILES[name]).read_text())
        except FileNotFoundError as exc:
            raise TaskUnavailable(f"task {name}: prompt file missing ({exc.filename})") from exc
    rows = {"ioi": _ioi, "greaterthan": _greaterthan, "docstring": _docstring}[name](
        session, source, n, random.Random(seed))
    if not rows:
        raise TaskUnavailable(f"task {name}: no prompt survives filtering for this tokenizer")
    clean, corrupt, cor, wr = zip(*rows)
    return CircuitTask(name, clean, corrupt, cor, wr)
