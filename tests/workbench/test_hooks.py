"""Hook sites and interventions: exact semantics, validation, and cleanup on exceptions."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.ffn import ffn_output, ffn_weights

PROMPTS = ["Paris is the capital of France", "Rome is"]


def _n_hooks(session) -> int:
    return sum(len(hp.fwd_hooks) for hp in session.model.hook_dict.values())


def test_parse_site_forms():
    assert wb.parse_site("mlp_post:3") == wb.Site("mlp_post", 3)
    assert wb.parse_site("3.mlp_post") == wb.Site("mlp_post", 3)
    assert wb.parse_site(("resid_pre", 0)) == wb.Site("resid_pre", 0)
    with pytest.raises(wb.UnknownSiteError, match="mlp_bogus"):
        wb.parse_site("mlp_bogus:3")
    with pytest.raises(wb.UnknownSiteError, match="kind:layer"):
        wb.parse_site("nonsense")


def test_unknown_layer_in_capture(tiny):
    with pytest.raises(wb.LayerOutOfRange, match="layer=7"):
        wb.capture(tiny, "Paris", ["mlp_post:7"])
    assert _n_hooks(tiny) == 0


def test_residual_identities(tiny, tiny_gemma):
    for s in (tiny, tiny_gemma):
        L = 1
        c = wb.capture(s, PROMPTS, [f"{k}:{L}" for k in
                                    ("resid_pre", "resid_mid", "resid_post", "attn_resid", "mlp_resid",
                                     "attn_out", "head_out", "mlp_out", "mlp_post")])
        m = c.mask
        torch.testing.assert_close((c[f"resid_pre:{L}"] + c[f"attn_resid:{L}"])[m], c[f"resid_mid:{L}"][m])
        torch.testing.assert_close((c[f"resid_mid:{L}"] + c[f"mlp_resid:{L}"])[m], c[f"resid_post:{L}"][m])
        torch.testing.assert_close(c[f"head_out:{L}"].sum(2)[m], c[f"attn_out:{L}"][m], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ffn_output(c[f"mlp_post:{L}"], ffn_weights(s, L))[m], c[f"mlp_out:{L}"][m],
                                   atol=1e-5, rtol=1e-4)


def test_zero_neurons_exact(tiny):
    L, units = 1, [3, 17, 200]
    base = wb.capture(tiny, PROMPTS, [f"mlp_post:{L}", f"mlp_out:{L}"])
    with wb.intervene(tiny, wb.zero_neurons(L, units)):
        hit = wb.capture(tiny, PROMPTS, [f"mlp_post:{L}", f"mlp_out:{L}"])
    assert (hit[f"mlp_post:{L}"][..., units] == 0).all()
    keep = [i for i in range(tiny.d_mlp) if i not in units]
    torch.testing.assert_close(hit[f"mlp_post:{L}"][..., keep], base[f"mlp_post:{L}"][..., keep])
    # removing m_i v_i from the FFN output, exactly
    w = ffn_weights(tiny, L)
    removed = base[f"mlp_post:{L}"][..., units] @ w.values[units]
    torch.testing.assert_close(hit[f"mlp_out:{L}"], base[f"mlp_out:{L}"] - removed, atol=1e-5, rtol=1e-4)
    assert _n_hooks(tiny) == 0


def test_scale_and_set_neurons_at_positions(tiny):
    L = 0
    base = wb.capture(tiny, PROMPTS, [f"mlp_post:{L}"])[f"mlp_post:{L}"]
    with wb.intervene(tiny, wb.scale_neurons(L, [5], 3.0, positions=[1])):
        sc = wb.capture(tiny, PROMPTS, [f"mlp_post:{L}"])[f"mlp_post:{L}"]
    torch.testing.assert_close(sc[:, 1, 5], 3.0 * base[:, 1, 5])
    torch.testing.assert_close(sc[:, 0], base[:, 0])
    with wb.intervene(tiny, wb.set_neurons(L, [5, 6], [1.5, -2.0])):
        st = wb.capture(tiny, PROMPTS, [f"mlp_post:{L}"])[f"mlp_post:{L}"]
    assert (st[..., 5] == 1.5).all() and (st[..., 6] == -2.0).all()


def test_ablate_heads_zeroes_head_output(tiny):
    with wb.intervene(tiny, wb.ablate_heads(0, [1, 2])):
        c = wb.capture(tiny, PROMPTS, ["head_out:0", "attn_z:0"])
    assert (c["head_out:0"][:, :, [1, 2]] == 0).all()
    assert c["head_out:0"][:, :, 0].abs().sum() > 0


def test_patch_copies_activation_from_other_run(tiny):
    src = wb.capture(tiny, "Rome is the capital of Italy", ["resid_pre:1"])
    src_t = src["resid_pre:1"]
    n = src_t.shape[1]
    with wb.intervene(tiny, wb.patch("resid_pre:1", src_t, positions=[0, 2])):
        c = wb.capture(tiny, "Paris is the capital of France", ["resid_pre:1"])
    torch.testing.assert_close(c["resid_pre:1"][0, [0, 2]], src_t[0, [0, 2]])
    assert n >= 3


def test_add_vector_steers(tiny):
    vec = torch.randn(tiny.d_model)
    base = wb.capture(tiny, PROMPTS, ["resid_post:0"])["resid_post:0"]
    with wb.intervene(tiny, wb.add_vector("resid_post:0", vec, scale=2.0)):
        got = wb.capture(tiny, PROMPTS, ["resid_post:0"])["resid_post:0"]
    torch.testing.assert_close(got, base + 2.0 * vec)


def test_bad_interventions_rejected_before_any_hook(tiny):
    with pytest.raises(wb.NeuronOutOfRange, match=r"neuron .*=999"):
        with wb.intervene(tiny, wb.zero_neurons(0, [1]), wb.zero_neurons(1, [999])):
            pass
    with pytest.raises(wb.HeadOutOfRange):
        with wb.intervene(tiny, wb.ablate_heads(0, [9])):
            pass
    with pytest.raises(wb.ShapeError, match="width 64"):
        with wb.intervene(tiny, wb.add_vector("resid_post:0", torch.ones(3))):
            pass
    with pytest.raises(wb.NonFiniteError):
        with wb.intervene(tiny, wb.add_vector("resid_post:0", torch.full((64,), float("nan")))):
            pass
    with pytest.raises(wb.NonFiniteError):
        wb.set_neurons(0, [1], float("nan"))
    with pytest.raises(wb.UnknownSiteError, match="derived"):
        with wb.intervene(tiny, wb.add_vector("head_out:0", torch.ones(64))):
            pass
    assert _n_hooks(tiny) == 0


def test_exception_in_body_leaves_no_hook(tiny):
    before = tiny.logits("Paris is")
    with pytest.raises(RuntimeError, match="boom"):
        with wb.intervene(tiny, wb.zero_neurons(0, list(range(256)))):
            raise RuntimeError("boom")
    assert _n_hooks(tiny) == 0
    torch.testing.assert_close(tiny.logits("Paris is"), before)


def test_position_out_of_range_raises_and_cleans(tiny):
    with pytest.raises(wb.PositionOutOfRange, match="position=50"):
        with wb.intervene(tiny, wb.zero_neurons(0, [1], positions=[50])):
            tiny.logits("Paris is")
    assert _n_hooks(tiny) == 0
