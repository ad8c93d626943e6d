"""Vocabulary projections: values, logit lens, sub-updates, memory interventions."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.vocab import (
    ffn_sub_updates,
    logit_lens,
    memory_intervention,
    value_logits,
    value_tokens,
)

PROMPT = "The Eiffel Tower is located in the city of"


def test_value_projection_equals_hand_matmul(tiny):
    layer, units = 1, [0, 7, 255]
    W_out = tiny.hf_model.model.layers[layer].mlp.down_proj.weight.T  # [d_mlp d_model]
    g = tiny.hf_model.model.norm.weight
    eps = tiny.hf_model.model.norm.variance_epsilon
    v = W_out[units]
    normed = v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + eps) * g
    by_hand = normed @ tiny.hf_model.lm_head.weight.T
    torch.testing.assert_close(value_logits(tiny, layer, units), by_hand, atol=1e-5, rtol=1e-4)
    vt = value_tokens(tiny, layer, units, k=3)
    assert [t.id for t in vt[1].promoted] == by_hand[1].topk(3).indices.tolist()
    assert [t.id for t in vt[1].suppressed] == (-by_hand[1]).topk(3).indices.tolist()


def test_sub_updates_sum_to_ffn_output(tiny):
    su = ffn_sub_updates(tiny, "Paris is the capital of", layer=1, position=-1, target=" the", k=5)
    w = wb.ffn_weights(tiny, 1)
    rebuilt = (su.coefficients[:, None] * w.values.float()).sum(0)
    torch.testing.assert_close(rebuilt, su.update, atol=1e-5, rtol=1e-4)
    mags = [r.magnitude for r in su.by_magnitude]
    assert mags == sorted(mags, reverse=True) and len(mags) == 5
    effects = [r.target_effect for r in su.by_target]
    assert effects == sorted(effects, reverse=True)


def test_sub_update_target_effect_is_direct_logit_contribution(tiny):
    """Sum of all target effects at the last layer = target logit change from the whole update,
    to first order; with the frozen norm scale it is exact: W_U[:,t] . (g/rms(h) * update)."""
    last = tiny.n_layers - 1
    tid = tiny.token_id(" the")
    su = ffn_sub_updates(tiny, "Paris is the capital of", layer=last, target=" the", k=tiny.d_mlp)
    cap = wb.capture(tiny, "Paris is the capital of", [f"resid_post:{last}"])
    h = cap[f"resid_post:{last}"][0, -1]
    direct = (tiny.final_norm(h) / h * su.update) @ tiny.W_U[:, tid]
    total = sum(r.target_effect for r in su.by_target)
    assert abs(total - float(direct)) < 1e-3 * max(1.0, abs(float(direct)))


def test_logit_lens_last_layer_matches_model(tiny):
    lens = logit_lens(tiny, "Paris is the capital of", k=3)
    post = lens.kinds.index("resid_post")
    torch.testing.assert_close(lens.target_probs[post, -1, :, 0], lens.final_probs[:, 0], atol=1e-5, rtol=1e-4)
    assert lens.target_ranks[post, -1, -1, 0] == 0
    assert lens.top_probs.shape == (3, tiny.n_layers, len(lens.str_tokens), 3)


def test_bad_inputs(tiny):
    with pytest.raises(wb.LayerOutOfRange):
        value_logits(tiny, 9)
    with pytest.raises(wb.NeuronOutOfRange, match="=256"):
        value_tokens(tiny, 0, [256])
    with pytest.raises(wb.ShapeError, match="k=0"):
        value_tokens(tiny, 0, [1], k=0)
    with pytest.raises(wb.TokenError):
        logit_lens(tiny, "Paris is", targets=["Paris is the"])
    with pytest.raises(wb.PositionOutOfRange):
        ffn_sub_updates(tiny, "Paris", layer=0, position=40)
    with pytest.raises(wb.EmptyPromptError):
        logit_lens(tiny, "")


@pytest.mark.real
def test_zeroing_last_layer_neuron_is_removing_its_sub_update(smollm):
    last = smollm.n_layers - 1
    cap = wb.capture(smollm, PROMPT, [f"resid_post:{last}", f"mlp_post:{last}"], logits=True)
    m = cap[f"mlp_post:{last}"][0, -1]
    i = int(m.abs().argmax())
    v = wb.ffn_weights(smollm, last).values[i]
    predicted = smollm.unembed(cap[f"resid_post:{last}"][0, -1] - m[i] * v)
    change = memory_intervention(smollm, PROMPT, [wb.zero_neurons(last, [i])], k=5)
    with wb.intervene(smollm, wb.zero_neurons(last, [i])):
        actual = smollm.last_logits(PROMPT)[0]
    torch.testing.assert_close(actual, predicted, atol=2e-4, rtol=1e-4)
    assert change.kl > 0 and change.before[0].token == " Paris"


@pytest.mark.real
def test_logit_lens_paris_emerges_in_upper_layers(smollm):
    lens = logit_lens(smollm, PROMPT, targets=[" Paris"])
    first = lens.first_top1_layer()
    assert first is not None and first >= smollm.n_layers // 2
    post = lens.kinds.index("resid_post")
    assert lens.target_probs[post, -1, -1, 0] > 0.5
