"""Directions read through a lens: the linear part only, computed independently on the tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench import capture
from workbench.errors import ShapeError, WorkbenchError
from workbench.lenses import (
    LogitReader,
    as_reader,
    direction_logits,
    init_tuned_lens,
    kind_of,
    load_lens,
)
from workbench.vocab import ffn_sub_updates, value_logits, value_tokens, written_tokens

PROMPT = "The quick brown fox jumps over the lazy"


@pytest.fixture(scope="module")
def tuned(tiny):
    """A tuned lens with random translators A_l and biases b_l (not the identity)."""
    g = torch.Generator().manual_seed(0)
    lens = init_tuned_lens(tiny)
    A = 0.3 * torch.randn(lens.A.shape, generator=g)
    b = 2.0 * torch.randn(lens.b.shape, generator=g)
    return dataclasses.replace(lens, A=A, b=b)


@pytest.fixture(scope="module")
def jlens(tiny):
    """A Jacobian lens with a random J_0 (TransformerLens's own transport object)."""
    from transformer_lens.tools.analysis.jacobian_lens import JacobianLens

    from workbench.lenses import JLens
    from workbench.lenses._store import identity

    J = torch.eye(tiny.d_model) + 0.3 * torch.randn(tiny.d_model, tiny.d_model,
                                                    generator=torch.Generator().manual_seed(1))
    return JLens(JacobianLens({0: J}, n_prompts=1, d_model=tiny.d_model, metadata={}), identity(tiny))


def _W_out(tiny, layer):
    return tiny.model.blocks[layer].mlp.W_out.detach().float()           # [d_mlp d_model]: rows v_i


def test_value_reading_through_tuned_lens_is_linear_part_then_unembed(tiny, tuned):
    layer, units = 0, [3, 17, 200]
    v = _W_out(tiny, layer)[units]
    want = tiny.unembed(v + v @ tuned.A[layer]).float()                   # no b_0: a direction
    got = value_logits(tiny, layer, units, lens=tuned)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, tiny.unembed(v).float(), atol=1e-3)    # the lens changed it
    # the bias is not used: the reading is the same with b = 0
    no_bias = dataclasses.replace(tuned, b=torch.zeros_like(tuned.b))
    torch.testing.assert_close(value_logits(tiny, layer, units, lens=no_bias), got)
    # and it differs from reading v as a state (which adds b_0)
    assert not torch.allclose(tuned.logits(tiny, v, layer), got, atol=1e-3)
    vt = value_tokens(tiny, layer, units, k=3, lens=tuned)
    for j, row in enumerate(vt):
        assert [t.id for t in row.promoted] == want[j].topk(3).indices.tolist()
        assert [t.id for t in row.suppressed] == want[j].topk(3, largest=False).indices.tolist()


def test_logit_lens_reading_is_unchanged(tiny):
    v = _W_out(tiny, 1)[[0, 5]]
    assert torch.equal(value_logits(tiny, 1, [0, 5]), value_logits(tiny, 1, [0, 5], lens="logit"))
    assert torch.equal(direction_logits(tiny, v, 1), tiny.unembed(v))
    assert torch.equal(direction_logits(tiny, v, 1, LogitReader()), tiny.unembed(v))


def test_sub_updates_and_written_tokens_through_tuned_lens(tiny, tuned):
    layer = 1
    subs = ffn_sub_updates(tiny, PROMPT, layer, -1, k=4, lens=tuned)
    plain = ffn_sub_updates(tiny, PROMPT, layer, -1, k=4)
    assert [u.neuron for u in subs.by_magnitude] == [u.neuron for u in plain.by_magnitude]
    m = capture(tiny, PROMPT, [f"mlp_post:{layer}"])[f"mlp_post:{layer}"][0, -1].float()
    A = tuned.A[layer]
    for u in subs.by_magnitude:
        x = torch.sign(m[u.neuron]) * _W_out(tiny, layer)[u.neuron]
        want = tiny.unembed(x + x @ A).float()
        assert [t.id for t in u.promoted] == want.topk(5).indices.tolist()
    y = subs.update
    assert [t.id for t in subs.update_promoted] == tiny.unembed(y + y @ A).float().topk(5).indices.tolist()
    rows = written_tokens(tiny, PROMPT, "mlp_resid", -1, 3, lens=tuned)
    ys = capture(tiny, PROMPT, [f"mlp_resid:{i}" for i in range(tiny.n_layers)])
    for i in range(tiny.n_layers):
        y = ys[f"mlp_resid:{i}"][0, -1].float()
        assert [t.id for t in rows[i]] == tiny.unembed(y + y @ tuned.A[i]).float().topk(3).indices.tolist()


def test_jacobian_direction_is_J_times_x(tiny, jlens):
    x = torch.randn(3, tiny.d_model)
    J = jlens.lens.jacobians[0]
    torch.testing.assert_close(direction_logits(tiny, x, 0, jlens), tiny.unembed(x @ J.T), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(direction_logits(tiny, x, 1, jlens), tiny.unembed(x))  # last layer: identity
    assert kind_of(jlens) == "jacobian" and kind_of("tuned") == "tuned" and kind_of(LogitReader()) == "logit"


def test_sae_decoder_row_through_lens(tiny, tuned):
    from workbench.saes import SAEConfig, decoder_vocab, make_sae

    sae = make_sae(SAEConfig("topk", d_in=tiny.d_model, d_sae=32, site="resid_post:0", k=4))
    d = sae.W_dec.detach()[7].float()
    r = decoder_vocab(tiny, sae, 7, k=4, lens=tuned)
    want = tiny.unembed(d + d @ tuned.A[0]).float()
    assert list(r.top_tokens) == tiny.to_str_tokens(want.topk(4).indices)
    assert r.top_logits == pytest.approx(want.topk(4).values.tolist(), rel=1e-4, abs=1e-5)
    # resid_pre:1 is the residual leaving block 0: read with layer 0's translator
    pre = make_sae(SAEConfig("topk", d_in=tiny.d_model, d_sae=32, site="resid_pre:1", k=4))
    d = pre.W_dec.detach()[2].float()
    want = tiny.unembed(d + d @ tuned.A[0]).float()
    assert list(decoder_vocab(tiny, pre, 2, k=3, lens=tuned).top_tokens) == tiny.to_str_tokens(want.topk(3).indices)
    emb = make_sae(SAEConfig("topk", d_in=tiny.d_model, d_sae=32, site="resid_pre:0", k=4))
    with pytest.raises(WorkbenchError, match="resid_pre:0"):
        decoder_vocab(tiny, emb, 0, lens=tuned)
    decoder_vocab(tiny, emb, 0)                                       # the logit lens reads it


def test_bad_lens_arguments(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    with pytest.raises(WorkbenchError, match="lens kind='nope'"):
        value_tokens(tiny, 0, [1], lens="nope")
    with pytest.raises((WorkbenchError, TypeError)):  # TypeError: the suite's shape checks (make test)
        as_reader(tiny, 3)                                            # type: ignore[arg-type]
    with pytest.raises(WorkbenchError, match="train and save one first"):
        ffn_sub_updates(tiny, PROMPT, 0, lens="tuned")                # none saved in this cache
    with pytest.raises(ShapeError, match="d_model=64"):
        direction_logits(tiny, torch.zeros(3, 5), 0)
    with pytest.raises(WorkbenchError, match="no tuned translator"):
        value_logits(tiny, 1, [0], lens=init_tuned_lens(tiny, [0]))
    assert isinstance(load_lens(tiny, "logit"), LogitReader)
