"""Tuned lens: identity at init, the last layer stays put, training lowers KL, files check the model."""

from __future__ import annotations

import pytest
import torch

from workbench import Corpus, capture
from workbench.errors import LayerOutOfRange, ShapeError, WorkbenchError
from workbench.lenses import (
    LensModelMismatch,
    LensNotFound,
    LogitReader,
    TunedLensConfig,
    init_tuned_lens,
    lens_kl,
    load_tuned_lens,
    train_tuned_lens,
)

PROMPT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def trained(tiny, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    return train_tuned_lens(tiny, corpus, TunedLensConfig(steps=40, batch=64, max_tokens=1024, lr=0.5),
                            progress=False), corpus


def test_identity_at_init(tiny):
    lens = init_tuned_lens(tiny)
    cap = capture(tiny, PROMPT, ["resid_post:0", "resid_post:1"], logits=True)
    last = lens.logits(tiny, cap["resid_post:1"][0], 1)
    assert torch.allclose(last, cap.logits[0].float(), atol=1e-5)              # the model's output
    h0 = cap["resid_post:0"][0]
    assert torch.equal(lens.translate(h0, 0), h0.float())
    assert torch.allclose(lens.logits(tiny, h0, 0), LogitReader().logits(tiny, h0, 0))


def test_training_lowers_kl_and_keeps_last_layer(tiny, trained):
    lens, corpus = trained
    assert lens.meta["final_loss"] < lens.meta["first_loss"]
    assert float(lens.A[-1].abs().max()) == 0.0 and float(lens.b[-1].abs().max()) == 0.0  # held
    assert float(lens.A[0].abs().max()) > 1e-3                                  # layer 0 did move
    r = lens_kl(tiny, corpus, {"logit": LogitReader(), "tuned": lens}, max_tokens=256)
    assert r.kl["tuned"][0] < r.kl["logit"][0]
    assert abs(r.kl["tuned"][1]) < 1e-6 and abs(r.kl["logit"][1]) < 1e-6           # last layer: exact


def test_save_load_and_refuse_other_model(tiny, tiny_gemma, trained, tmp_path):
    lens, _ = trained
    path = lens.save(tmp_path / "t.safetensors")
    back = load_tuned_lens(tiny, path)
    assert torch.equal(back.A, lens.A) and back.layers == lens.layers
    one = load_tuned_lens(tiny, path, layers=[1])
    assert one.layers == (1,) and torch.equal(one.A[0], lens.A[1])
    with pytest.raises(LensModelMismatch, match="tiny-llama.*tiny-gemma"):
        load_tuned_lens(tiny_gemma, path)
    with pytest.raises(LensNotFound, match="does not exist"):
        load_tuned_lens(tiny, tmp_path / "missing.safetensors")
    with pytest.raises(LayerOutOfRange, match="layer=7"):
        load_tuned_lens(tiny, path, layers=[7])


def test_same_name_other_weights_is_refused(tiny, trained, tmp_path):
    from workbench.testing import tiny_session

    other = tiny_session("llama", seed=1, tokenizer_dir=tmp_path / "tok")
    path = trained[0].save(tmp_path / "t.safetensors")
    with pytest.raises(LensModelMismatch, match="different weights"):
        load_tuned_lens(other, path)


def test_bad_config_and_layers(tiny):
    with pytest.raises(ShapeError, match="steps=0"):
        TunedLensConfig(steps=0)
    with pytest.raises(ShapeError, match="lr=-1"):
        TunedLensConfig(lr=-1)
    assert TunedLensConfig.from_dict(TunedLensConfig().to_dict()) == TunedLensConfig()
    with pytest.raises(LayerOutOfRange):
        init_tuned_lens(tiny, [2])
    with pytest.raises(WorkbenchError, match="no tuned translator"):
        init_tuned_lens(tiny, [0]).translate(torch.zeros(3, tiny.d_model), 1)


@pytest.mark.real
def test_real_model_last_layer_identity_and_short_training(smollm, small_corpus_path):
    lens = init_tuned_lens(smollm, [3, 29])
    cap = capture(smollm, "The Eiffel Tower is located in the city of", ["resid_post:29"], logits=True)
    assert torch.allclose(lens.logits(smollm, cap["resid_post:29"][0], 29), cap.logits[0].float(), atol=1e-4)
    corpus = Corpus.load(small_corpus_path, smollm.tokenizer, max_tokens=600)
    trained = train_tuned_lens(smollm, corpus, TunedLensConfig(steps=4, batch=8, max_tokens=128),
                               lens=lens, progress=False)
    assert float(trained.A[1].abs().max()) == 0.0 and float(trained.b[1].abs().max()) == 0.0
    assert float(trained.A[0].abs().max()) > 1e-3
