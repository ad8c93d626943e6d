"""ROME on the real default model: one edit takes, generalises to its own prompt, and undoes."""

from __future__ import annotations

import pytest
import torch

from editing import EditRequest, RomeConfig, apply, compute_rome_update, key_stats
from workbench.corpus import Corpus


@pytest.mark.real
def test_real_edit_eiffel_to_rome(smollm, small_corpus_path, tmp_path, param_bytes):
    corpus = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=12_000)
    st = key_stats(smollm, 4, corpus, n_tokens=6000, directory=tmp_path, progress=False)
    cfg = RomeConfig(prefix_lengths=(5,), prefixes_per_length=2, steps=12)
    prompt = "The Eiffel Tower is located in the city of"
    before = param_bytes(smollm)
    up = compute_rome_update(smollm, EditRequest(prompt, "The Eiffel Tower", "Rome"), st, cfg)
    assert param_bytes(smollm) == before
    rome, paris = smollm.token_id(" Rome"), smollm.token_id(" Paris")
    p = torch.softmax(smollm.last_logits(prompt)[0].float(), -1)
    assert p[paris] > p[rome]
    with apply(smollm, up):
        q = torch.softmax(smollm.last_logits([prompt, "The Louvre is located in the city of"]).float(), -1)
    assert q[0, rome] > q[0, paris]                          # efficacy
    assert q[1, paris] > q[1, rome]                          # a neighbour keeps its fact
    assert param_bytes(smollm) == before


@pytest.mark.real
def test_pinned_prompt_key_gets_the_full_edit(smollm, small_corpus_path, tmp_path):
    """Without BOS a subject at position 0-1 has a key unlike the prefixed mean k*; ROME's u
    reaches it only partly (gain u . k < 1), the pinned u reaches it exactly."""
    from editing import context_prefixes, locate_subject
    from editing.rome import left_vector, subject_key

    corpus = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=12_000)
    st = key_stats(smollm, 4, corpus, n_tokens=6000, directory=tmp_path, progress=False)
    cfg = RomeConfig(prefix_lengths=(5,), prefixes_per_length=3)
    prompt, subject = "Windows RT is developed by", "Windows RT"
    sps = [locate_subject(smollm, p + prompt, subject, search_from=len(p))
           for p in context_prefixes(smollm, cfg)]
    assert sps[0].last <= 1 and all(sp.last > 1 for sp in sps[1:])
    k_star, k_bare = subject_key(smollm, 4, sps), subject_key(smollm, 4, sps[:1])
    plain, pinned = left_vector(st, k_star), left_vector(st, k_star, [k_bare])
    assert float(plain @ k_bare) < 0.8                       # the measured property of the model
    assert float(pinned @ k_bare) == pytest.approx(1.0, abs=1e-4)
    assert float(pinned @ k_star) == pytest.approx(1.0, abs=1e-4)
