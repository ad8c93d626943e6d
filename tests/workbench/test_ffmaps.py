"""FF blocks through attention maps: the decomposition sums to what the model computes."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.errors import LayerOutOfRange, ShapeError, WorkbenchError
from workbench.ffmaps import decompose_all, decompose_layer, ffmaps, ig_gated_split

PROMPT = "The quick brown fox jumps over the lazy dog. Paris is the capital of France."


def _check_sums(d, ff_tol=1e-3):
    err = d.relative_errors().amax(-1)
    for s, name in enumerate(d.scopes):
        # scopes up to the FF input are exact; the FF and what follows carry the IG error
        tol = 1e-4 if s < d.ff_scope else ff_tol
        assert float(err[s]) < tol, (d.layer, name, float(err[s]))


@pytest.mark.parametrize("fixture", ["tiny", "tiny_gemma"])
def test_decomposition_sums_to_layer_output(fixture, request):
    s = request.getfixturevalue(fixture)
    ds = list(decompose_all(s, PROMPT))
    assert [d.layer for d in ds] == list(range(s.n_layers))
    for d in ds:
        _check_sums(d)
        n = len(d.str_tokens)
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        assert d.parts[:, upper].abs().max() == 0                         # causal: no j > i
        # the summed ATB vector is never longer than the sum of its per-head norms
        assert (d.parts[0].norm(dim=-1) <= d.head_norms.sum(0) + 1e-5).all()
    if fixture == "tiny_gemma":
        assert ds[0].scopes[1] == "ATB+LN" and "+FF+LN+RES" in ds[0].scopes[-1]


def test_ig_split_converges_with_steps(tiny):
    errs = {}
    for steps in (4, 16, 64):
        errs[steps] = max(float(d.relative_errors()[d.ff_scope].max()) for d in decompose_all(tiny, PROMPT, steps=steps))
    assert errs[4] > errs[16] > errs[64]
    assert errs[64] < 1e-3
    gauss = max(float(d.relative_errors()[d.ff_scope].max()) for d in decompose_all(tiny, PROMPT, steps=16, rule="gauss"))
    assert gauss < 1e-4


def test_ig_split_matches_autograd_integrated_gradients():
    """The factorised split equals IG computed from full Jacobians at every path point."""
    torch.manual_seed(0)
    d, h, n_src = 8, 12, 3
    Wg, Wu, Wd = torch.randn(h, d, dtype=torch.float64), torch.randn(h, d, dtype=torch.float64), torch.randn(d, h, dtype=torch.float64)
    parts = torch.randn(n_src, d, dtype=torch.float64)
    act = torch.nn.functional.silu

    def f(x):
        return Wd @ (act(Wg @ x) * (Wu @ x))

    steps = 32
    m = parts.sum(0)
    ref = torch.zeros(n_src, d, dtype=torch.float64)
    for k in range(steps):
        t = (k + 0.5) / steps
        J = torch.autograd.functional.jacobian(f, t * m)
        ref += (parts @ J.T) / steps
    got = ig_gated_split(parts, Wg, Wu, Wd, act, steps=steps, rule="midpoint")
    assert torch.allclose(got, ref, atol=1e-10)


@pytest.mark.real
def test_real_model_decomposition_and_maps(smollm):
    before = smollm.logits("The Eiffel Tower is in Paris")
    prompt = "The Eiffel Tower is located in the city of Paris."
    r = ffmaps(smollm, prompt, layers=[0, 29], top=5)
    assert [lm.layer for lm in r.layers] == [0, 29]
    for lm in r.layers:
        assert max(lm.errors[: lm.ff_scope]) < 1e-4 and max(lm.errors[lm.ff_scope :]) < 1e-3
    lm = r.layer(29)
    n = len(r.str_tokens)
    assert lm.maps.shape == (len(lm.scopes), n, n) and lm.head_maps.shape == (smollm.n_heads, n, n)
    assert torch.allclose(lm.shares.sum(-1), torch.ones(len(lm.scopes), n), atol=1e-5)
    for v in (lm.ff_rho, lm.cancel_rho):
        assert -1 <= v <= 1
    assert lm.ff_change > 0 and lm.ff_retained >= 0
    assert 0 < len(r.pairs) <= 5 and all(p.j < p.i for p in r.pairs)
    assert all(a.gain >= b.gain for a, b in zip(r.pairs, r.pairs[1:]))
    json.dumps(r.to_dict())
    assert torch.equal(before, smollm.logits("The Eiffel Tower is in Paris"))  # nothing left behind


def test_bad_inputs(tiny):
    with pytest.raises(LayerOutOfRange, match="layer=5.*0..1"):
        decompose_layer(tiny, PROMPT, 5)
    with pytest.raises(ShapeError, match="steps=0"):
        decompose_layer(tiny, PROMPT, 0, steps=0)
    with pytest.raises(WorkbenchError, match="rule='simpson'"):
        decompose_layer(tiny, PROMPT, 0, rule="simpson")
    with pytest.raises(WorkbenchError, match="empty"):
        decompose_layer(tiny, "", 0)
