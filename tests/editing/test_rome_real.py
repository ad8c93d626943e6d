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
