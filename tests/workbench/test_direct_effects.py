"""Direct effects: embedding + attention + FFN effects add up to the model's own final logit."""

import inspect
import math

import pytest
import torch

from workbench.capture import capture
from workbench.direct_effects import DirectEffects, direct_effects, norm_gain
from workbench.errors import TokenError, WorkbenchError

PROMPT = "The Eiffel Tower is located in the city of"


def _check_sum(s, prompt, target):
    r = direct_effects(s, prompt, target)
    logits = s.last_logits(prompt)[0].double()           # independent: a plain forward pass
    t = r.target_id
    assert len(r.attn) == len(r.ffn) == s.n_layers
    scale = max(1.0, abs(float(logits[t])))
    assert r.reconstructed_logit == pytest.approx(float(logits[t]), abs=2e-5 * scale + 1e-5)
    assert r.logit == pytest.approx(float(logits[t]), abs=1e-5 * scale)
    return r


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_sum_is_final_logit_tiny(fixture, request):
    s = request.getfixturevalue(fixture)
    for target in (5, 17, 400):
        r = _check_sum(s, "hello world and more", target)
        assert r.bias == 0.0 and r.softcap is None


def test_sum_is_final_logit_smollm(smollm):
    r = _check_sum(smollm, PROMPT, " Paris")
    # the FFNs, not the embedding, write most of " Paris"
    assert math.fsum(r.ffn) > abs(r.embedding)
    d = r.to_dict()
    assert d["total"] == pytest.approx(d["logit"], abs=1e-3) and len(d["ffn"]) == smollm.n_layers
    # Llama-style: what reaches the residual is the raw FFN output, so the old reading agrees
    cap = capture(smollm, PROMPT, [f"mlp_out:{layer}" for layer in range(smollm.n_layers)])
    u = smollm.W_U[:, r.target_id].double() * r.norm_scale * norm_gain(smollm)
    raw = [float(u @ cap[f"mlp_out:{layer}"][0, r.position].double()) for layer in range(smollm.n_layers)]
    assert raw == pytest.approx(list(r.ffn), abs=1e-4)


def test_sum_is_final_logit_gemma(gemma):
    r = _check_sum(gemma, PROMPT, " Paris")
    # on Gemma the raw FFN output (before the post-FFN norm) gives different, much smaller effects
    cap = capture(gemma, PROMPT, [f"mlp_out:{layer}" for layer in range(gemma.n_layers)])
    u = gemma.W_U[:, r.target_id].double() * r.norm_scale * norm_gain(gemma)
    raw = [float(u @ cap[f"mlp_out:{layer}"][0, r.position].double()) for layer in range(gemma.n_layers)]
    assert sum(abs(x) for x in r.ffn) > 10 * sum(abs(x) for x in raw)
    assert abs(r.embedding + math.fsum(r.attn) + math.fsum(raw) - r.logit) > 1.0


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_norm_gain_is_the_rmsnorm_gain(fixture, request):
    # N(h) = g ⊙ h / sqrt(mean(h²) + eps) for any h, with eps = 1e-6 on the tiny models
    s = request.getfixturevalue(fixture)
    g = norm_gain(s)
    for seed in range(3):
        h = torch.randn(s.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3
        c = 1 / math.sqrt(float((h ** 2).mean()) + 1e-6)
        assert torch.allclose(c * g * h, s.final_norm(h.float()).double(), atol=1e-5)


def test_bad_inputs(tiny):
    with pytest.raises(TokenError, match="out of range"):
        direct_effects(tiny, "hello", tiny.d_vocab)
    with pytest.raises(TokenError, match="target"):  # the function's own guard, not the suite's type hook
        inspect.unwrap(direct_effects)(tiny, "hello", 1.5)
    with pytest.raises(WorkbenchError):
        direct_effects(tiny, "", 3)
    assert isinstance(direct_effects(tiny, "hello", 3), DirectEffects)
