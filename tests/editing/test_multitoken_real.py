"""Multi-token targets on the real default model: ROME raises the whole sequence's probability."""

from __future__ import annotations

import pytest

from editing import (
    EditCase,
    EditRequest,
    RomeConfig,
    apply,
    compute_rome_update,
    key_stats,
    score_cases,
)
from workbench.corpus import Corpus


@pytest.mark.real
def test_rome_multi_token_target_raises_the_sequence(smollm, small_corpus_path, tmp_path, param_bytes):
    corpus = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=12_000)
    st = key_stats(smollm, 4, corpus, n_tokens=6000, directory=tmp_path, progress=False)
    cfg = RomeConfig(prefix_lengths=(5,), prefixes_per_length=1, steps=10)
    prompt, subject, target = "The Eiffel Tower is located in the city of", "The Eiffel Tower", "Buenos Aires"
    case = EditCase(0, prompt, subject, target, "Paris", "The Eiffel Tower stands in the city of",
                    "The Louvre is located in the city of", "Paris")
    before = param_bytes(smollm)
    up = compute_rome_update(smollm, EditRequest(prompt, subject, target), st, cfg)
    assert len(up.target_ids) >= 2 and up.target_id == up.target_ids[0]
    assert param_bytes(smollm) == before
    base = score_cases(smollm, [case])[0]
    with apply(smollm, up):
        edited = score_cases(smollm, [case])[0]
    assert base.p_new < base.p_true                          # the model knows Paris
    assert edited.p_new > 10 * base.p_new                    # the whole sequence became likely
    assert edited.p_new > edited.p_true                      # efficacy by sequence probability
    assert param_bytes(smollm) == before
