"""apply / undo: bitwise restores, stacking in any order, exceptions, rank one, bad inputs."""

from __future__ import annotations

import pytest
import torch

from editing import (
    EditRequest,
    SubjectNotFound,
    active_edits,
    apply,
    compute_rome_update,
)
from workbench.errors import LayerOutOfRange, TokenError

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"


def _target(session):
    for t in (" Rome", " Paris", " the", " of"):
        try:
            session.token_id(t)
            return t.strip()
        except TokenError:
            continue
    raise AssertionError("no one-token target in the tiny vocabulary")


@pytest.fixture(scope="module")
def update(tiny, tiny_stats, fast_cfg):
    return compute_rome_update(tiny, EditRequest(PROMPT, SUBJECT, _target(tiny)), tiny_stats, fast_cfg)


def test_compute_leaves_weights_untouched(tiny, tiny_stats, fast_cfg, param_bytes):
    before = param_bytes(tiny)
    compute_rome_update(tiny, EditRequest(PROMPT, SUBJECT, _target(tiny)), tiny_stats, fast_cfg)
    assert param_bytes(tiny) == before


def test_rank_one_and_maps_k_star_to_v_star(tiny, update):
    W = tiny.model.blocks[update.layer].mlp.W_out.detach().clone()
    with apply(tiny, update):
        W2 = tiny.model.blocks[update.layer].mlp.W_out.detach().clone()
    d = (W2 - W).double()
    s = torch.linalg.svdvals(d)
    assert s[1] <= 1e-5 * s[0]                               # rank one
    assert torch.allclose(update.k_star @ W2, update.v_star, atol=1e-4, rtol=1e-4)
    assert torch.allclose(update.u @ update.k_star, torch.tensor(1.0), atol=1e-5)


def test_undo_restores_every_parameter_bitwise(tiny, update, param_bytes):
    before = param_bytes(tiny)
    h = apply(tiny, update)
    changed = [n for n, b in param_bytes(tiny).items() if b != before[n]]
    assert len(changed) == 1 and f"layers.{update.layer}." in changed[0] and "down_proj" in changed[0]
    assert h.undo() and not h.undo()
    assert param_bytes(tiny) == before
    assert active_edits(tiny) == []


def test_edit_shows_in_session_immediately(tiny, update):
    base = tiny.last_logits(PROMPT)
    with apply(tiny, update):
        edited = tiny.last_logits(PROMPT)
        assert tiny.model.blocks[update.layer].mlp.W_out.data_ptr() == \
            tiny.hf_model.model.layers[update.layer].mlp.down_proj.weight.data_ptr()
    assert not torch.equal(base, edited)
    assert torch.equal(base, tiny.last_logits(PROMPT))
    gain = edited[0, update.target_id] - base[0, update.target_id]
    assert gain > 0


def test_stacked_edits_undo_in_any_order(tiny, update, tiny_stats, fast_cfg, param_bytes):
    before = param_bytes(tiny)
    other = compute_rome_update(tiny, EditRequest("Rome is the capital of Italy", "Rome", "Paris"),
                                tiny_stats, fast_cfg)
    a = apply(tiny, update)
    only_b = None
    b = apply(tiny, other)
    a.undo()                                  # undo the first while the second stays
    with_b = param_bytes(tiny)
    b.undo()
    assert param_bytes(tiny) == before
    with apply(tiny, other):
        only_b = param_bytes(tiny)
    assert with_b == only_b                  # what remains is exactly edit b alone
    assert param_bytes(tiny) == before


def test_exception_in_body_restores(tiny, update, param_bytes):
    before = param_bytes(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with apply(tiny, update):
            raise RuntimeError("boom")
    assert param_bytes(tiny) == before


@pytest.mark.parametrize("prompt,subject,target,exc,match", [
    (PROMPT, "Big Ben", "Rome", SubjectNotFound, "does not occur"),
    (PROMPT, "", "Rome", SubjectNotFound, "empty"),
    (PROMPT, SUBJECT, "", TokenError, "empty"),
    (PROMPT, SUBJECT, "   ", TokenError, "empty"),
])
def test_bad_requests_raise_and_leave_weights(tiny, tiny_stats, fast_cfg, param_bytes, prompt, subject, target,
                                              exc, match):
    before = param_bytes(tiny)
    with pytest.raises(exc, match=match):
        compute_rome_update(tiny, EditRequest(prompt, subject, target), tiny_stats, fast_cfg)
    assert param_bytes(tiny) == before


def test_layer_out_of_range(tiny, tiny_stats, update, fast_cfg, param_bytes):
    import dataclasses

    before = param_bytes(tiny)
    bad_stats = dataclasses.replace(tiny_stats, layer=7)
    with pytest.raises(LayerOutOfRange, match="layer=7 is out of range"):
        compute_rome_update(tiny, EditRequest(PROMPT, SUBJECT, "Rome"), bad_stats, fast_cfg)
    with pytest.raises(LayerOutOfRange, match="valid range is 0..1"):
        apply(tiny, dataclasses.replace(update, layer=-1))
    assert param_bytes(tiny) == before


def test_gemma_gated_edit_roundtrip(tiny_gemma, small_corpus_path, tmp_path, fast_cfg, param_bytes):
    from editing import key_stats
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny_gemma.tokenizer, max_tokens=3000)
    st = key_stats(tiny_gemma, 0, corpus, n_tokens=1500, directory=tmp_path, progress=False)
    before = param_bytes(tiny_gemma)
    up = compute_rome_update(tiny_gemma, EditRequest(PROMPT, SUBJECT, _target(tiny_gemma)), st, fast_cfg)
    assert param_bytes(tiny_gemma) == before
    with apply(tiny_gemma, up):
        W2 = tiny_gemma.model.blocks[0].mlp.W_out.detach()
        assert torch.allclose(up.k_star @ W2, up.v_star, atol=1e-4, rtol=1e-4)
    assert param_bytes(tiny_gemma) == before


def test_early_stop_keeps_the_delta_whose_loss_was_low(tiny, tiny_stats):
    from editing import RomeConfig

    cfg = RomeConfig(prefix_lengths=(3,), prefixes_per_length=1, steps=5, stop_nll=1e9)
    up = compute_rome_update(tiny, EditRequest(PROMPT, SUBJECT, _target(tiny)), tiny_stats, cfg)
    assert up.info["steps"] == 1 and torch.count_nonzero(up.r) == 0


def test_subject_keys_equal_each_prompt_captured_alone(tiny):
    # one right-padded forward for all prompts == the mlp_post capture of each prompt on its own
    import workbench as wb
    from editing import locate_subject
    from editing.rome import subject_keys

    texts = ["Bob", "Yesterday in the old town, Bob", "A short note: Bob"]
    sps = [locate_subject(tiny, t + " plays the piano", "Bob", search_from=len(t) - 3) for t in texts]
    keys = subject_keys(tiny, 1, sps)
    assert keys.shape == (3, tiny.d_mlp)
    for sp, k in zip(sps, keys):
        cap = wb.capture(tiny, tiny.batch_from_ids([list(sp.ids)]), ["mlp_post:1"])["mlp_post:1"]
        torch.testing.assert_close(k, cap[0, sp.end - 1].float(), rtol=1e-5, atol=1e-5)
