"""Evaluation: loaders, ROME's n-gram entropy on known texts, case scores against softmax."""

from __future__ import annotations

import json
import math

import pytest
import torch

from editing import (
    CaseScores,
    EditCase,
    generation_entropy,
    load_counterfact,
    load_known,
    score_case,
    summarize,
)
from workbench.errors import CorpusError


def test_generation_entropy_known_values():
    # 8 distinct words: 7 distinct bigrams, 6 distinct trigrams
    text = "a b c d e f g h"
    want = (2 / 3 * math.log2(7) + 4 / 3 * math.log2(6)) / 2
    assert generation_entropy([text]) == pytest.approx(want)
    assert generation_entropy(["x x x x x x"]) == pytest.approx(0.0)   # one repeated n-gram
    assert generation_entropy([text, "x x x x"]) == pytest.approx(want / 2)


def test_loaders(tmp_path, shared_data):
    cases = load_counterfact(shared_data / "counterfact" / "counterfact-val.json", n=3)
    assert len(cases) == 3 and all(c.subject in c.prompt for c in cases)
    known = load_known(shared_data / "known_facts" / "known_1000.json", n=2)
    assert known[0].subject in known[0].prompt
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(CorpusError, match="lacks"):
        load_counterfact(bad)


def test_score_case_matches_softmax(tiny):
    case = EditCase(0, "The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome",
                    "Paris", "Where is the Eiffel Tower? In the city of", "The capital of France is",
                    "Paris")
    ids = {"new": 5, "true": 6, "new_rephrase": 5, "true_rephrase": 6, "new_loc": 5, "true_loc": 6}
    s = score_case(tiny, case, ids)
    p = torch.softmax(tiny.logits(case.locality_prompt)[0, -1].float(), -1)
    assert s.p_new_loc == pytest.approx(float(p[5]), rel=1e-5)
    assert s.p_true_loc == pytest.approx(float(p[6]), rel=1e-5)


def test_summarize():
    a = CaseScores(0, 0.6, 0.1, 0.2, 0.3, 0.1, 0.5, 4.0)
    b = CaseScores(1, 0.1, 0.2, 0.5, 0.1, 0.4, 0.2, 5.0)
    s = summarize([a, b])
    assert s["efficacy"] == 50.0 and s["paraphrase"] == 50.0 and s["neighborhood"] == 50.0
    assert s["fluency"] == 4.5 and s["n"] == 2
    assert s["efficacy_gap"] == pytest.approx((0.5 - 0.1) / 2)


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_batched_generation_is_each_prompt_alone(request, name):
    """A prompt's sampled text depends on its prompt and seed, not on its batch (left padding,
    one generator per row): batched == one call per prompt with the shifted seed."""
    from editing import generate_texts

    s = request.getfixturevalue(name)
    prompts = ["The Eiffel Tower is in", "Hello", "A much longer prompt about the capital of France is"]
    batched = generate_texts(s, prompts, max_new_tokens=8, seed=3, batch_size=2)
    alone = [generate_texts(s, [p], max_new_tokens=8, seed=3 + i)[0] for i, p in enumerate(prompts)]
    assert batched == alone
    assert all(t.startswith(p) and len(t) > len(p) for t, p in zip(batched, prompts))
    rng = torch.get_rng_state()
    generate_texts(s, prompts[:1], max_new_tokens=4)
    assert torch.equal(rng, torch.get_rng_state())          # the global RNG is untouched


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma", "smollm"])
def test_sequence_logprobs_equal_each_pair_alone(request, name):
    """Batched, length-sorted, unembedded at the target positions only == one full forward per
    pair with log_softmax over every position (the direct computation)."""
    from editing._hf import pure_lm
    from editing.evaluate import sequence_logprobs

    s = request.getfixturevalue(name)
    prompts = ["The Eiffel Tower is in", "Hello", "A much longer prompt about the capital of France is"]
    pairs = [(p, tuple(s.encode(t))) for p in prompts for t in (" Paris", " the city of Rome", " x")]
    got = sequence_logprobs(s, pairs, batch_size=4)
    hf = pure_lm(s)
    for (p, t), g in zip(pairs, got):
        a = s.encode(p)
        with torch.no_grad():
            lp = torch.log_softmax(hf(input_ids=torch.tensor([(a + list(t))[:-1]]), use_cache=False).logits[0].float(), -1)
        want = float(lp[torch.arange(len(a) - 1, len(a) - 1 + len(t)), torch.tensor(t)].mean())
        assert g == pytest.approx(want, abs=2e-5), (p, t)
    assert sequence_logprobs(s, []) == []


@pytest.mark.parametrize("cap", [None, 0.25])       # the tiny model's logits reach about 0.5
def test_logits_at_equal_the_full_forward_there(tiny_gemma, cap):
    """`editing._hf.logits_at` (trunk, then the head at chosen positions only) == the causal
    LM's own logits at those positions, with the logit soft-cap when the config sets one."""
    from editing._hf import logits_at, pure_lm

    hf = pure_lm(tiny_gemma)
    old = hf.config.final_logit_softcapping
    hf.config.final_logit_softcapping = cap
    try:
        tokens = torch.tensor([tiny_gemma.encode("The Eiffel Tower is in Paris"), tiny_gemma.encode("Hello there, how are you")[:7]])
        rows, cols = torch.tensor([0, 0, 1]), torch.tensor([2, 5, 6])
        got = logits_at(tiny_gemma, tokens, rows, cols)
        with torch.no_grad():
            want = hf(input_ids=tokens, use_cache=False).logits[rows, cols].float()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if cap:
            assert got.abs().max() < cap
    finally:
        hf.config.final_logit_softcapping = old
