"""SAE bodies: shapes, exact reconstruction with known weights, configs, bad inputs."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import NonFiniteError, ShapeError
from workbench.saes import ARCHITECTURES, SAEConfig, SAEConfigError, TrainConfig, make_sae


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_encode_decode_shapes(arch):
    sae = make_sae(SAEConfig(arch, 16, 64, k=4))
    x = torch.randn(3, 5, 16)
    codes = sae.encode(x)
    assert codes.shape == (3, 5, 64)
    assert sae.decode(codes).shape == (3, 5, 16)
    out = sae(x)
    assert out.recon.shape == x.shape and out.pre.shape == (3, 5, 64)
    assert torch.allclose(out.recon, sae.decode(out.codes), atol=1e-5)


def test_topk_keeps_k_largest():
    sae = make_sae(SAEConfig("topk", 16, 64, k=4))
    x = torch.randn(50, 16)
    codes, pre = sae.encode(x), sae.pre_acts(x)
    assert ((codes > 0).sum(-1) <= 4).all()
    kth = pre.topk(4, -1).values[:, -1:]
    assert ((codes > 0) <= (pre >= kth)).all()          # only top-k entries can be active
    assert torch.equal(codes[codes > 0], pre[codes > 0])  # and they carry their pre-activation


def test_jumprelu_threshold():
    sae = make_sae(SAEConfig("jumprelu", 8, 16, jumprelu_init_threshold=0.5)).eval()
    pre = torch.tensor([[0.4, 0.6, -1.0] + [0.0] * 13])
    out = sae.activation(pre)
    assert out[0, :3].tolist() == [0.0, pytest.approx(0.6), 0.0]


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_known_weights_reconstruct_exactly(arch, make_identity):
    sae = make_identity(12, arch=arch)
    x = torch.randn(7, 12)
    assert torch.equal(sae(x).recon, x)


def test_fold_scale_is_exact_reparametrisation():
    sae = make_sae(SAEConfig("topk", 16, 64, k=4))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(10, 16)
    s = 3.0
    before = sae(x * s).recon / s
    sae.fold_scale(s)
    assert torch.allclose(sae(x).recon, before, atol=1e-4)


def test_bad_inputs_one_clear_error_each():
    sae = make_sae(SAEConfig("topk", 16, 64, k=4))
    with pytest.raises(ShapeError, match="d_in=16"):
        sae.encode(torch.randn(2, 15))
    bad = torch.randn(2, 16)
    bad[0, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN"):
        sae.encode(bad)
    with pytest.raises(SAEConfigError, match="k=100 is out of range"):
        SAEConfig("topk", 16, 64, k=100)
    with pytest.raises(SAEConfigError, match="architecture='gated'"):
        SAEConfig("gated", 16, 64)
    with pytest.raises(SAEConfigError, match="head=2 is only meaningful"):
        SAEConfig("topk", 16, 64, k=4, site="resid_post:1", head=2)
    with pytest.raises(SAEConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(SAEConfigError, match="unknown SAE config keys"):
        SAEConfig.from_dict({"d_in": 4, "bogus": 1})


def test_config_round_trip():
    c = SAEConfig("jumprelu", 32, 128, site="attn_z:1", head=2)
    assert SAEConfig.from_dict(c.to_dict()) == c
    t = TrainConfig(total_tokens=1000, lr=1e-3)
    assert TrainConfig.from_dict(t.to_dict()) == t
