"""Attention view on the tiny model: patterns and head-output norms against identities."""

from __future__ import annotations

import numpy as np
import torch

from widgets import AttentionView, Controller
from workbench import capture

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_attention_result_identities(tiny):
    att = Controller(tiny).attention(PROMPT)
    n = len(att.str_tokens)
    assert att.patterns.shape == (tiny.n_layers, tiny.n_heads, n, n)
    np.testing.assert_allclose(att.patterns.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(att.patterns, 1) == 0)           # causal
    cap = capture(tiny, PROMPT, ["attn_out:1", "attn_z:1"])
    W_O = tiny.model.blocks[1].attn.W_O                     # [head d_head d_model]
    z = cap["attn_z:1"][0]                                  # [pos head d_head]
    per_head = torch.einsum("phd,hdm->phm", z, W_O)
    np.testing.assert_allclose(att.head_norms[1], per_head.norm(dim=-1).numpy(), rtol=1e-4)


def test_controls_redraw(tiny):
    ctl = Controller(tiny)
    view = AttentionView(ctl.attention(PROMPT), ctl.attention, run_async=False)
    z0 = np.array(view.pattern.data[0].z, dtype=float)
    view.head.value = 1
    assert not np.allclose(np.array(view.pattern.data[0].z, dtype=float), z0)
    view.layer.value = 1
    np.testing.assert_allclose(np.array(view.pattern.data[0].z, dtype=float),
                               view.result.patterns[1, 1], rtol=1e-3, atol=1e-6)
    view.set_prompt("Hello world")
    assert view.result.prompt == "Hello world"
    n = len(view.result.str_tokens)
    assert np.array(view.pattern.data[0].z).shape == (n, n)
    assert "<table" in view.static_html(include_plotlyjs=False)
