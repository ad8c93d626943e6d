"""Concept search and boosting: exact scores vs the full projection, and boosting on the real model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench import capture
from workbench.concepts import (
    boost_interventions,
    concept_effect,
    concept_scores,
    concept_search,
    concept_tokens,
    load_concept,
    random_interventions,
)
from workbench.errors import TokenError, WorkbenchError
from workbench.vocab import value_logits

DATA = Path(__file__).resolve().parents[2] / "data" / "concepts"


def _brute_z(session, layer, ids):
    full = value_logits(session, layer).double()                     # [d_mlp vocab], by hand
    z = (full[:, ids] - full.mean(-1, keepdim=True)) / full.std(-1, unbiased=False, keepdim=True)
    return z.mean(-1)


def test_scores_equal_full_projection(tiny):
    c = concept_tokens(tiny, ["Paris", "Rome", "France"], name="places")
    got = concept_scores(tiny, c, check_rows=0)                      # the covariance shortcut only
    for layer in range(tiny.n_layers):
        want = _brute_z(tiny, layer, list(c.token_ids)).float()
        torch.testing.assert_close(got[layer], want, atol=2e-4, rtol=1e-4)


def test_concept_tokens_variants_and_errors(tiny):
    c = concept_tokens(tiny, ["Paris", "zqxjv"], name="x")
    assert "zqxjv" in c.skipped and all(tiny.token_id(t) == i for t, i in zip(c.tokens, c.token_ids))
    with pytest.raises(TokenError, match="single token"):
        concept_tokens(tiny, ["zqxjvw", "qqqzzzk"], name="none")
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_concept(tiny, DATA / "absent.txt")


def test_search_signs_and_boost_sets_coefficients(tiny):
    c = concept_tokens(tiny, ["Paris", "Rome"], name="places")
    r = concept_search(tiny, c, top=6, k=5)
    scores = concept_scores(tiny, c)
    best = max(scores.max().item(), (-scores).max().item())
    assert r.top[0].score == pytest.approx(best, rel=1e-5)
    assert all(h.score == pytest.approx(h.sign * scores[h.layer, h.neuron].item(), rel=1e-5) for h in r.top)
    ivs = boost_interventions(r, value=4.0)
    cap = capture(tiny, "The capital", [f"mlp_post:{layer}" for layer in range(tiny.n_layers)],
                  interventions=ivs)
    for h in r.top:
        m = cap[f"mlp_post:{h.layer}"][0, :, h.neuron]
        assert torch.allclose(m, torch.full_like(m, 4.0 * h.sign))
    before = tiny.logits("The capital")
    concept_effect(tiny, c, ["The capital"], ivs, random_interventions(tiny, r, 4.0))
    assert torch.equal(tiny.logits("The capital"), before)           # every edit undone


def test_boosting_colour_values_on_real_model(smollm):
    c = load_concept(smollm, DATA / "colors.txt")
    r = concept_search(smollm, c, layers=[28, 29], top=6)
    assert r.top[0].hits >= 5                                        # top value promotes colour words
    prompts = ["The car was", "She opened the door and saw", "My favourite thing is"]
    before = smollm.logits(prompts[0])
    e = concept_effect(smollm, c, prompts, boost_interventions(r, 10.0),
                       random_interventions(smollm, r, 10.0))
    assert e.mean_boosted > 0.3 and e.mean_boosted > 20 * e.mean_before, (e.mean_before, e.mean_boosted)
    assert e.mean_control < 0.1 < e.mean_boosted - e.mean_control
    assert torch.equal(smollm.logits(prompts[0]), before)


def test_negative_word_list_is_the_projects_own(smollm):
    c = load_concept(smollm, DATA / "negative.txt")
    assert len(c.token_ids) >= 15 and " stupid" in c.tokens
