"""Labels for linear probes: token classes from data/labels, a hand-labelled POS set, and labels
derived from the corpus itself.

Corpus labels are computed on window rows of corpus ids (the positions the model actually sees):
``label[b, p]`` describes position ``p`` of row ``b``; "next" labels look at the token at
``p + 1`` in the stream (a row carries a few lookahead ids past its end for that). -1 marks a
position without a label. The control-task type of a position is its current token id.

Label names (``CORPUS_LABELS``):
    next_is_number       the next token is digits
    next_is_capitalised  the next token starts a capitalised word
    next_is_city         the next word (one or more tokens) is a city from data/labels
    next_ends_line       the next token holds a newline (derived from the corpus layout)
    next_repeats_line    the next token already occurred earlier on the same line and row
                         (derived from the corpus: an induction-style copy label)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["CORPUS_LABELS", "LOOKAHEAD", "LABELS_DIR", "TokenTable", "corpus_labels",
           "token_table", "pos_examples", "load_facts", "PosExamples"]

LABELS_DIR = Path(__file__).resolve().parents[1] / "data" / "labels"
LOOKAHEAD = 6  # stream ids carried past each row's end, enough for multi-token city names

_DIGITS = re.compile(r"^[0-9]+$")
_CAP = re.compile(r"^[A-Z][a-zA-Z]*$")


def _read(name: str):
    path = LABELS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python data/make_labels.py`")
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class TokenTable:
    """Per-vocabulary-id facts used by the token labels (arrays of length d_vocab).

    Args:
        text: decoded text of each id.
        number, capitalised, word_start, newline: boolean class of each id.
    """

    text: tuple[str, ...]
    number: np.ndarray
    capitalised: np.ndarray
    word_start: np.ndarray
    newline: np.ndarray


def token_table(tokenizer, d_vocab: int) -> TokenTable:
    """Decode every id once and classify it (numbers, capitalised word starts, newlines)."""
    return _token_table(tokenizer, d_vocab)


@lru_cache(maxsize=4)
def _token_table(tokenizer, d_vocab: int) -> TokenTable:
    n = min(d_vocab, len(tokenizer))
    text = [tokenizer.decode([i]) for i in range(n)] + [""] * (d_vocab - n)
    number = np.array([bool(_DIGITS.match(t.strip())) for t in text])
    word_start = np.array([t[:1].isspace() for t in text])
    capitalised = np.array([t[:1] == " " and bool(_CAP.match(t[1:])) for t in text])
    newline = np.array(["\n" in t for t in text])
    return TokenTable(tuple(text), number, capitalised, word_start, newline)


def _next(ext: np.ndarray, width: int) -> np.ndarray:
    return ext[:, 1 : width + 1]


def _lab_number(ext, width, table):
    nxt = _next(ext, width)
    return np.where(nxt >= 0, table.number[np.maximum(nxt, 0)], -1).astype(np.int64)


def _lab_capitalised(ext, width, table):
    nxt = _next(ext, width)
    return np.where(nxt >= 0, table.capitalised[np.maximum(nxt, 0)], -1).astype(np.int64)


def _lab_newline(ext, width, table):
    nxt = _next(ext, width)
    return np.where(nxt >= 0, table.newline[np.maximum(nxt, 0)], -1).astype(np.int64)


def _lab_city(ext, width, table):
    """1 where the word beginning at p+1 spells a city (followed by a word end), else 0."""
    cities = set(_read("token_classes.json")["cities"])
    longest = max(len(c) for c in cities) + 1
    out = np.zeros((ext.shape[0], width), dtype=np.int64)
    text = table.text
    for b in range(ext.shape[0]):
        row = ext[b]
        for p in range(width):
            j = p + 1
            if row[j] < 0 or not table.word_start[row[j]]:
                continue
            s = ""
            while j < len(row) and row[j] >= 0 and len(s) <= longest:
                s += text[row[j]]
                j += 1
                name = s.strip()
                if name in cities:
                    after = text[row[j]] if j < len(row) and row[j] >= 0 else " "
                    if not after[:1].isalnum():
                        out[b, p] = 1
                        break
    return out


def _lab_repeat(ext, width, table):
    """1 where the next token occurred earlier on the same line within the row."""
    out = np.zeros((ext.shape[0], width), dtype=np.int64)
    for b in range(ext.shape[0]):
        seen: set[int] = set()
        for p in range(width):
            tok = int(ext[b, p])
            if table.newline[tok]:
                seen.clear()
            else:
                seen.add(tok)
            nxt = int(ext[b, p + 1])
            out[b, p] = -1 if nxt < 0 else int(nxt in seen)
    return out


CORPUS_LABELS: dict[str, Callable] = {
    "next_is_number": _lab_number,
    "next_is_capitalised": _lab_capitalised,
    "next_is_city": _lab_city,
    "next_ends_line": _lab_newline,
    "next_repeats_line": _lab_repeat,
}


def corpus_labels(name: str, ext: np.ndarray, width: int, table: TokenTable) -> np.ndarray:
    """Labels [rows, width] for window rows with lookahead ids ``ext`` [rows, width + LOOKAHEAD].

    ``ext`` holds corpus ids (no BOS), -1 past the end of the stream.
    """
    return CORPUS_LABELS[name](ext, width, table)


@dataclass(frozen=True)
class PosExamples:
    """The hand-labelled POS set, tokenized: one example per word (its last token).

    Args:
        rows: token ids of each sentence (BOS first when the model wants it).
        positions: (sentence, position) of each example, [n, 2].
        labels: [n] tag index; classes: the tag names.
        types: [n] token id at the example position (control-task type).
    """

    rows: tuple[tuple[int, ...], ...]
    positions: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    types: np.ndarray


def pos_examples(tokenizer, prepend_bos: bool) -> PosExamples:
    """Tokenize data/labels/pos.json; the example of a word is its last token."""
    data = _read("pos.json")
    classes = tuple(data["tagset"])
    index = {t: i for i, t in enumerate(classes)}
    rows, pos, labels, types = [], [], [], []
    bos = prepend_bos and tokenizer.bos_token_id is not None
    for si, sent in enumerate(data["sentences"]):
        text, spans = "", []
        for w in sent["words"]:
            if text and w not in {".", ","}:
                text += " "
            spans.append((len(text), len(text) + len(w)))
            text += w
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
        shift = 1 if bos else 0
        for (_, end), tag in zip(spans, sent["tags"]):
            last = max(i for i, (a, _) in enumerate(offs) if a < end)
            pos.append((si, last + shift))
            labels.append(index[tag])
            types.append(ids[last])
        rows.append(tuple(([tokenizer.bos_token_id] if bos else []) + ids))
    return PosExamples(tuple(rows), np.array(pos), np.array(labels), classes, np.array(types))


def load_facts(path: str | Path | None = None) -> list[dict]:
    """Known facts as ``{"prompt", "answer"}``: the shared known_1000 format (prompt, attribute)
    or the project's data/labels/facts.json (prompt, answer)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8")) if path else _read("facts.json")
    out = []
    for r in raw:
        ans = r.get("answer", r.get("attribute"))
        if not r.get("prompt") or not ans:
            continue
        out.append({"prompt": r["prompt"], "answer": ans, "subject": r.get("subject")})
    return out
