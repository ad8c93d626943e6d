"""Fixtures for battery tests: a tiny model saved to a directory, so specs can name it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tok_dir):
    """A random 2-layer Llama (tiny tokenizer) saved as a model directory `Session.load` reads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.testing import tiny_tokenizer

    tok = tiny_tokenizer(tok_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    hf = LlamaForCausalLM(cfg).eval()
    hf.config.architectures = ["LlamaForCausalLM"]
    d = tmp_path_factory.mktemp("tiny_model")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any model load fail loudly: proves validation happens before loading."""
    from workbench.session import Session

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Session, "load", classmethod(lambda cls, *a, **k: boom()))
