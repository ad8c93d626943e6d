"""Capture: batched-with-padding equals one-prompt-at-a-time, for every site (property-based)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.hooks import SITE_KINDS

WORDS = ["the", "quick", "brown", "fox", "Paris", "is", "capital", "of", "France", "1999", "Mary", "John"]


def _n_hooks(session) -> int:
    return sum(len(hp.fwd_hooks) for hp in session.model.hook_dict.values())


prompt_st = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
sites_st = st.lists(st.tuples(st.sampled_from(sorted(SITE_KINDS)), st.integers(0, 1)),
                    min_size=1, max_size=5, unique=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(prompt_st, min_size=1, max_size=4), site_list=sites_st, gemma=st.booleans())
def test_batched_capture_equals_single(tiny, tiny_gemma, prompts, site_list, gemma):
    s = tiny_gemma if gemma else tiny
    sites = [wb.Site(k, layer) for k, layer in site_list]
    batched = wb.capture(s, prompts, sites)
    for i, p in enumerate(prompts):
        single = wb.capture(s, p, sites)
        for site in sites:
            torch.testing.assert_close(batched.row(site, i), single.row(site, 0), atol=1e-5, rtol=1e-4)
    assert _n_hooks(s) == 0


def test_capture_shapes_and_token_identity(tiny):
    c = wb.capture(tiny, ["Paris is the capital", "Rome"], ["mlp_post:1", "attn_pattern:0", "head_out:1"])
    b = c.batch
    assert c["mlp_post:1"].shape == (2, b.tokens.shape[1], tiny.d_mlp)
    assert c["attn_pattern:0"].shape == (2, tiny.n_heads, b.tokens.shape[1], b.tokens.shape[1])
    assert c["head_out:1"].shape == (2, b.tokens.shape[1], tiny.n_heads, tiny.d_model)
    assert c.flat("mlp_post:1").shape == (int(b.lengths.sum()), tiny.d_mlp)
    assert c["mlp_post:1"].device == tiny.device
    assert b.str_tokens[1] == tuple(tiny.to_str_tokens(tiny.encode("Rome")))
    # attention rows are distributions over real keys
    pat = c.row("attn_pattern:0", 0)
    torch.testing.assert_close(pat.sum(-1), torch.ones_like(pat.sum(-1)))
    with pytest.raises(KeyError, match="not captured"):
        c["mlp_post:0"]


def test_capture_stops_early_and_matches_full(tiny):
    early = wb.capture(tiny, "Paris is", ["resid_post:0"])
    full = wb.capture(tiny, "Paris is", ["resid_post:0"], logits=True)
    assert early.logits is None and full.logits is not None
    assert full.need_logits() is full.logits
    with pytest.raises(wb.WorkbenchError, match="logits=True"):
        early.need_logits()
    torch.testing.assert_close(early["resid_post:0"], full["resid_post:0"])


def test_capture_with_interventions_is_scoped(tiny):
    c = wb.capture(tiny, "Paris is", ["mlp_post:0"], interventions=[wb.zero_neurons(0, [4])])
    assert (c["mlp_post:0"][..., 4] == 0).all()
    assert _n_hooks(tiny) == 0
    assert (wb.capture(tiny, "Paris is", ["mlp_post:0"])["mlp_post:0"][..., 4] != 0).any()


@pytest.mark.real
def test_ffn_identity_every_layer_smollm(smollm):
    _ffn_identity(smollm)


@pytest.mark.real
@pytest.mark.gemma
def test_ffn_identity_every_layer_gemma(gemma):
    _ffn_identity(gemma)


def _ffn_identity(s):
    prompts = ["The Eiffel Tower is located in the city of", "In 1999, Mary gave a book to John because"]
    sites = [wb.Site(k, layer) for layer in range(s.n_layers) for k in ("mlp_post", "mlp_out")]
    c = wb.capture(s, prompts, sites)
    for layer in range(s.n_layers):
        w = wb.ffn_weights(s, layer)
        rebuilt = wb.ffn_output(c[f"mlp_post:{layer}"], w)[c.mask]
        ref = c[f"mlp_out:{layer}"][c.mask]
        rel = (rebuilt - ref).norm() / ref.norm()
        assert rel < 1e-4, f"layer {layer}: relative error {rel:.2e}"


# ---------------------------------------------------------------- the default path (issue 14)
FAST = sorted(k for k in SITE_KINDS if k != "attn_pattern")


@pytest.mark.parametrize("gemma", [False, True])
def test_default_path_equals_generic_on_every_supported_site(tiny, tiny_gemma, gemma):
    s = tiny_gemma if gemma else tiny
    sites = [wb.Site(k, layer) for k in FAST for layer in range(s.n_layers)]
    prompts = ["The quick brown fox jumps", "Paris"]
    fast = wb.capture(s, prompts, sites)
    ref = wb.capture(s, prompts, sites, backend="generic")
    assert (fast.path, ref.path) == ("eager", "generic")      # the CPU default: the pure trunk
    for site in sites:
        for i in range(len(prompts)):
            torch.testing.assert_close(fast.row(site, i), ref.row(site, i), atol=1e-5, rtol=1e-4)


def test_default_path_falls_back_to_generic(tiny):
    assert wb.capture(tiny, "Paris is", ["attn_pattern:0", "mlp_post:0"]).path == "generic"
    assert wb.capture(tiny, "Paris is", ["mlp_post:0"], logits=True).path == "generic"
    zero = wb.zero_neurons(0, [1, 2])
    c = wb.capture(tiny, "Paris is", ["mlp_post:0"], interventions=[zero])
    assert c.path == "generic" and (c["mlp_post:0"][..., [1, 2]] == 0).all()
    with tiny.hooks([("blocks.0.hook_resid_pre", lambda a, hook: None)]):
        assert wb.capture(tiny, "Paris is", ["mlp_post:0"]).path == "generic"
    with pytest.raises(wb.WorkbenchError, match="backend"):
        wb.capture(tiny, "Paris is", ["mlp_post:0"], backend="fastest")


@pytest.mark.parametrize("backend", ["generic", "auto"])
def test_last_layer_capture_never_unembeds(tiny, backend):
    def boom(act, hook=None):
        raise AssertionError("the unembedding ran")

    last = tiny.n_layers - 1
    ref = wb.capture(tiny, "Paris is", [f"resid_post:{last}"], logits=True)
    with tiny.hooks([("unembed.hook_in", boom)]):         # active hooks: the generic path
        got = wb.capture(tiny, "Paris is", [f"resid_post:{last}", f"mlp_post:{last}"], backend=backend)
    assert got.path == "generic" and got.logits is None
    torch.testing.assert_close(got[f"resid_post:{last}"], ref[f"resid_post:{last}"])
    assert _n_hooks(tiny) == 0
