"""Jacobian lens: TransformerLens's fit and transport in the session, parity with its readout."""

from __future__ import annotations

import pytest
import torch

from workbench import capture
from workbench.errors import EmptyPromptError, WorkbenchError
from workbench.lenses import LensModelMismatch, fit_jacobian_lens, lens, load_jacobian_lens

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
        "Rome is the capital of Italy. Alice plays the piano and Bob plays chess.")


@pytest.fixture(scope="module")
def jl(tiny):
    return fit_jacobian_lens(tiny, [TEXT], skip_first_positions=4, dim_batch=64, progress=False)


def test_fit_and_parity_with_transformer_lens_readout(tiny, jl):
    assert jl.layers == (0,) and jl.lens.n_prompts == 1
    tokens = tiny.tokenize(PROMPT := "Paris is the capital of France").tokens
    ro = jl.lens.readout(tiny.model, tokens, layers=[0, 1], return_full_logits=True)
    cap = capture(tiny, PROMPT, ["resid_post:0", "resid_post:1"])
    got0 = lens(tiny, cap["resid_post:0"][0], 0, "jacobian", reader=jl)
    assert torch.allclose(got0, ro.lens_logits[0], atol=1e-5)
    got1 = lens(tiny, cap["resid_post:1"][0], 1, "jacobian", reader=jl)       # last layer: identity
    assert torch.allclose(got1, ro.lens_logits[1], atol=1e-5)
    # J_0 is not the identity: the lens differs from the logit lens at layer 0
    assert not torch.allclose(got0, lens(tiny, cap["resid_post:0"][0], 0, "logit"), atol=1e-4)


def test_bos_policy_restored(tiny, jl):
    assert tiny.model.cfg.default_prepend_bos is True                     # the bridge default, untouched


def test_save_load_and_refuse_other_model(tiny, tiny_gemma, jl, tmp_path):
    path = jl.save(tmp_path / "j.safetensors")
    back = load_jacobian_lens(tiny, path)
    assert torch.equal(back.lens.jacobians[0], jl.lens.jacobians[0])
    with pytest.raises(LensModelMismatch, match="tiny-llama"):
        load_jacobian_lens(tiny_gemma, path)
    with pytest.raises(WorkbenchError, match="not a Jacobian lens"):
        from workbench.lenses import init_tuned_lens

        load_jacobian_lens(tiny, init_tuned_lens(tiny).save(tmp_path / "t.safetensors"))


def test_bad_inputs(tiny):
    with pytest.raises(EmptyPromptError, match="skip_first_positions"):
        fit_jacobian_lens(tiny, ["Hi there"], progress=False)
    with pytest.raises(WorkbenchError, match="last layer"):
        fit_jacobian_lens(tiny, [TEXT], layers=[1], progress=False)
