"""An applied edit's outcome carries its blast radius, computed from the unedited model."""

from __future__ import annotations

import pytest
import torch

from editing import EditRequest, compute_rome_update
from editing.outcome import apply_and_measure
from workbench.corpus import Corpus


@pytest.fixture(scope="module")
def update(tiny, tiny_stats, fast_cfg):
    req = EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Paris")
    return compute_rome_update(tiny, req, tiny_stats, fast_cfg)


def test_blast_radius_before_the_edit(tiny, update, small_corpus_path, param_bytes):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=1200)
    before = param_bytes(tiny)
    out, handle = apply_and_measure(tiny, update, gen_tokens=2, corpus=corpus, blast_tokens=512,
                                    neighbours=("The capital of Japan is", "Paris is a city in"))
    handle.undo()
    assert param_bytes(tiny) == before
    b = out.blast
    assert b is not None and b.layers == [update.layer]
    reach = [p["reach"] for p in b.prefixes]
    assert reach == sorted(reach, reverse=True) and len(reach) == 10
    # independent: the unedited key of the top prefix's token, read by a plain hook
    top = b.prefixes[0]
    ids = corpus.ids[max(0, top["offset"] - 127): top["offset"] + 1]
    got = []
    mlp = tiny.hf_model.model.layers[update.layer].mlp.down_proj
    h = mlp.register_forward_pre_hook(lambda m, inp: got.append(inp[0].detach()))
    try:
        with torch.no_grad():
            tiny.hf_model(ids[None])
    finally:
        h.remove()
    k = got[0][0, -1].float()
    want = float((update.u.float() @ k).abs() * update.r.float().norm())
    assert top["reach"] == pytest.approx(want, rel=0.05)   # same key up to the window's start
    assert len(b.prompts) == 2 and sum(p["predicted"] for p in b.prompts) >= 1
    # with the edit's target: margin of the unedited answer over the target, independently
    for p in b.prompts:
        lp = torch.log_softmax(tiny.hf_model(tiny.tokenize(p["prompt"]).tokens)[0][0, -1].float(), -1)
        t = tiny.tokenizer.encode(" Paris" if not p["prompt"].endswith(" ") else "Paris",
                                  add_special_tokens=False)[0]
        assert p["margin"] == pytest.approx(float(lp.max() - lp[t]), abs=1e-4)
        assert p["answer"] == tiny.tokenizer.decode([int(lp.argmax())])
        assert p["break_score"] == (p["reach"] / p["margin"] if p["margin"] > 0 else None)
    scored = [p for p in b.prompts if p["break_score"] is not None]
    if scored:                                    # the prediction ranks by break score
        best = max(scored, key=lambda p: p["break_score"])
        assert best["predicted"]


def test_blast_in_the_edit_html(tiny, update, small_corpus_path):
    from widgets.html.editing import compare_html

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=1200)
    out, handle = apply_and_measure(tiny, update, gen_tokens=2, corpus=corpus, blast_tokens=256)
    handle.undo()
    html = compare_html(out)
    assert "Blast radius" in html and out.blast.prefixes[0]["token"] in html
    out3, h3 = apply_and_measure(tiny, update, gen_tokens=2, neighbours=("The capital of Japan is",))
    h3.undo()
    html3 = compare_html(out3)
    row = out3.blast.prompts[0]
    assert "break score" in html3 and "margin" in html3 and row["prompt"] in html3
    assert (row["break_score"] is None) == ("target leads" in html3)
    out2, h2 = apply_and_measure(tiny, update, gen_tokens=2)
    h2.undo()
    assert out2.blast is None and "Blast radius" not in compare_html(out2)
