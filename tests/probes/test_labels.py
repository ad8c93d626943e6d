"""Label sets: token classes, multi-token city names, corpus-derived labels, the POS set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probes.labels import (
    LABELS_DIR,
    LOOKAHEAD,
    corpus_labels,
    load_facts,
    pos_examples,
    token_table,
)


def stream_labels(session, text: str, name: str) -> tuple[list[str], np.ndarray]:
    ids = session.tokenizer(text, add_special_tokens=False)["input_ids"]
    width = len(ids) - 1
    ext = np.array([ids + [-1] * (LOOKAHEAD + 1 - 1)])[:, : width + LOOKAHEAD]
    labs = corpus_labels(name, ext, width, token_table(session.tokenizer, session.d_vocab))[0]
    return session.to_str_tokens(ids), labs


@pytest.mark.real
def test_token_labels_on_the_real_tokenizer(smollm):
    text = "In 1990 we flew from New York to Paris and saw 12 old Cities in Buenos Aires today\n"
    toks, num = stream_labels(smollm, text, "next_is_number")
    nxt = toks[1:]
    assert [t for t, y in zip(nxt, num) if y == 1] == [t for t in nxt if t.strip().isdigit()]
    assert any(t.strip() == "1" or t.strip() == "199" or t.strip() == "12" for t, y in zip(nxt, num) if y)
    _, cap = stream_labels(smollm, text, "next_is_capitalised")
    starts = [t for t, y in zip(nxt, cap) if y == 1]
    assert " Paris" in starts and " Cities" in starts and " old" not in starts
    _, city = stream_labels(smollm, text, "next_is_city")
    hits = [t for t, y in zip(nxt, city) if y == 1]
    assert " New" in hits and " Paris" in hits
    assert " Cities" not in hits  # capitalised, but no city
    assert city.sum() == 3
    _, nl = stream_labels(smollm, text, "next_ends_line")
    assert nl[-1] == 1 and nl[:-1].sum() == 0


def test_repeat_label_resets_at_newlines(tiny):
    tok = tiny.tokenizer
    a, b, nl = tok("Paris", add_special_tokens=False)["input_ids"], tok(" Rome", add_special_tokens=False)["input_ids"], tok("\n", add_special_tokens=False)["input_ids"]
    ids = a + b + a + nl + a + b
    width = len(ids) - 1
    ext = np.array([ids + [-1] * LOOKAHEAD])[:, : width + LOOKAHEAD]
    lab = corpus_labels("next_repeats_line", ext, width, token_table(tok, len(tok)))[0]
    # "Paris Rome [Paris]" repeats; after the newline "Paris" is new on its line
    seq = list(lab)
    pa = len(a) + len(b) - 1  # position before the second "Paris"
    assert seq[pa] == 1
    assert seq[len(a) + len(b) + len(a) + len(nl) - 1] == 0


def test_pos_examples_cover_every_word(tiny):
    data = json.loads((LABELS_DIR / "pos.json").read_text())
    ex = pos_examples(tiny.tokenizer, prepend_bos=True)
    n_words = sum(len(s["words"]) for s in data["sentences"])
    assert len(ex.labels) == len(ex.types) == len(ex.positions) == n_words
    assert all(r[0] == tiny.tokenizer.bos_token_id for r in ex.rows)
    for (si, p), t in zip(ex.positions[:40], ex.types[:40]):
        assert ex.rows[si][p] == t
    assert set(np.unique(ex.labels)) <= set(range(len(ex.classes)))
    assert len(np.unique(ex.labels)) >= 10


def test_facts_files():
    own = load_facts()
    assert len(own) >= 20 and all(f["prompt"] and f["answer"] for f in own)
