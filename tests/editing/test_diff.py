"""Edit diff: last-layer lens equals the model's output before/after; the weights come back."""

from __future__ import annotations

import pytest
import torch

from editing import EditRequest, apply, compute_rome_update
from editing.diff import edit_diff
from workbench.corpus import Corpus


def test_edit_diff_views(tiny, tiny_stats, fast_cfg, small_corpus_path, param_bytes):
    prompt = "The Eiffel Tower is located in the city of"
    up = compute_rome_update(tiny, EditRequest(prompt, "The Eiffel Tower", "Paris"), tiny_stats,
                             fast_cfg)
    before = param_bytes(tiny)
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=1000)
    d = edit_diff(tiny, up, corpus=corpus, n_tokens=256)
    assert param_bytes(tiny) == before
    assert len(d.lens) == tiny.n_layers and len(d.units) == 10 and len(d.neighbours) == 10
    p0 = torch.softmax(tiny.last_logits(prompt)[0].float(), -1)[up.target_id]
    with apply(tiny, up):
        p1 = torch.softmax(tiny.last_logits(prompt)[0].float(), -1)[up.target_id]
    assert d.lens[-1]["p_target_before"] == pytest.approx(float(p0), rel=1e-4)
    assert d.lens[-1]["p_target_after"] == pytest.approx(float(p1), rel=1e-4)
    top = tiny.unembed(up.r).float().argmax()
    assert d.value_tokens[0][0] == tiny.tokenizer.decode([int(top)])
    # the units near k* are those with the largest |k*_i|; each moves by |u_i| |r|
    u0 = d.units[0]
    assert abs(u0["k_star"]) == pytest.approx(float(up.k_star.abs().max()))
    assert u0["shift"] == pytest.approx(abs(u0["u"]) * float(up.r.norm()), rel=1e-4)
    assert d.neighbours[0]["cosine"] >= d.neighbours[-1]["cosine"]
    assert set(d.to_dict()) >= {"value_tokens", "units", "neighbours", "lens"}
