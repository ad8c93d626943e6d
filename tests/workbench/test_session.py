"""Session: loading, tokens, BOS policy, errors, parity with the Hugging Face model."""

from __future__ import annotations

import pytest
import torch

import workbench as wb


def test_tiny_session_shapes(tiny):
    assert (tiny.n_layers, tiny.d_model, tiny.d_mlp, tiny.n_heads) == (2, 64, 256, 4)
    logits = tiny.logits(["Paris is", "The quick brown fox"])
    assert logits.shape == (2, tiny.tokenize(["The quick brown fox"]).tokens.shape[1], tiny.d_vocab)


def test_tokenize_right_pads_and_masks(tiny):
    b = tiny.tokenize(["The quick brown fox jumps", "Rome"])
    assert b.tokens.shape[0] == 2
    assert b.lengths.tolist() == [len(tiny.encode("The quick brown fox jumps")), len(tiny.encode("Rome"))]
    assert b.mask.sum().item() == int(b.lengths.sum())
    assert (b.tokens[1, b.lengths[1]:] == tiny.pad_id).all()
    assert "".join(b.str_tokens[0]) == "The quick brown fox jumps"


def test_bos_policy(tiny, tiny_gemma):
    assert tiny.encode("Rome")[0] != tiny.tokenizer.bos_token_id
    assert tiny_gemma.encode("Rome")[0] == tiny_gemma.tokenizer.bos_token_id


@pytest.mark.parametrize("bad", ["", []])
def test_empty_prompt_errors(tiny, bad):
    with pytest.raises(wb.EmptyPromptError, match="empty"):
        tiny.tokenize(bad)


def test_token_id_checks_single_token(tiny):
    assert tiny.token_id(" the") == tiny.tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(wb.TokenError, match="exactly one token"):
        tiny.token_id("The Eiffel Tower")
    with pytest.raises(wb.TokenError, match="empty"):
        tiny.token_id("")


def test_unknown_model_and_dtype():
    with pytest.raises(wb.UnknownModelError, match="not-a-model"):
        wb.Session.load("not-a-model")
    with pytest.raises(wb.UnknownModelError, match="dtype"):
        wb.Session.load("smollm2-135m", dtype="float8")


def test_check_layer_neuron_head_messages(tiny):
    with pytest.raises(wb.LayerOutOfRange, match=r"layer=5 .*0\.\.1"):
        tiny.check_layer(5)
    with pytest.raises(wb.NeuronOutOfRange, match=r"0\.\.255"):
        tiny.check_neuron(0, 256)
    with pytest.raises(wb.HeadOutOfRange, match=r"0\.\.3"):
        tiny.check_head(1, -1)
    assert tiny.check_neuron(1, 255) == 255


def test_unembed_of_last_residual_equals_logits(tiny, tiny_gemma):
    for s in (tiny, tiny_gemma):
        cap = wb.capture(s, "Paris is the capital of", [f"resid_post:{s.n_layers - 1}"], logits=True)
        torch.testing.assert_close(s.unembed(cap[f"resid_post:{s.n_layers - 1}"]), cap.logits)


def _hf_logits(session, prompt):
    ids = torch.tensor([session.encode(prompt)])
    with torch.no_grad():
        return session.hf_model(ids).logits


@pytest.mark.real
def test_smollm_parity_and_paris(smollm):
    prompt = "The Eiffel Tower is located in the city of"
    ours = smollm.logits(prompt)
    ref = _hf_logits(smollm, prompt)
    assert (ours - ref).abs().max().item() < 1e-4
    assert smollm.next_token(prompt) == " Paris"
    assert smollm.tokenize(prompt).tokens[0, 0].item() != smollm.tokenizer.bos_token_id


@pytest.mark.real
@pytest.mark.gemma
def test_gemma_parity(gemma):
    prompt = "The Eiffel Tower is located in the city of"
    assert gemma.tokenize(prompt).tokens[0, 0].item() == gemma.tokenizer.bos_token_id
    assert (gemma.logits(prompt) - _hf_logits(gemma, prompt)).abs().max().item() < 1e-4


@pytest.mark.real
def test_cached_directory_is_safetensors(smollm):
    from workbench.models import cached_model_dir

    d = cached_model_dir("smollm2-135m")
    assert list(d.glob("*.safetensors")) and not list(d.glob("*.bin"))
    assert (d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()
