"""Saving and loading: bitwise round trips, the SAELens layout, one clear error per bad file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from workbench.errors import ShapeError
from workbench.saes import SAEConfig, SAEFileError, load_sae, make_sae, save_sae


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_save_load_bitwise(tmp_path, arch):
    sae = make_sae(SAEConfig(arch, 16, 48, k=3, site="resid_post:1"))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    save_sae(sae, tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.cfg == sae.cfg
    for k, v in sae.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    x = torch.randn(4, 16)
    assert torch.equal(back(x).recon, sae.eval()(x).recon)


def test_saelens_layout(tmp_path):
    d = tmp_path / "sl"
    d.mkdir()
    W_enc, W_dec = torch.randn(64, 256), torch.randn(256, 64)
    thr = torch.rand(256)
    save_file({"W_enc": W_enc, "W_dec": W_dec, "b_enc": torch.zeros(256), "b_dec": torch.ones(64),
               "threshold": thr}, str(d / "sae_weights.safetensors"))
    (d / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": 64, "d_sae": 256,
                                            "hook_name": "blocks.1.hook_resid_post"}))
    sae = load_sae(d)
    assert sae.cfg.architecture == "jumprelu" and sae.cfg.site == "resid_post:1"
    assert torch.equal(sae.W_enc, W_enc) and torch.allclose(sae.threshold, thr)
    x = torch.randn(5, 64)
    pre = (x - 1) @ W_enc
    assert torch.allclose(sae.encode(x), pre * (pre > thr), atol=1e-5)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SAEFileError, match="does not exist"):
        load_sae(tmp_path / "nope")
    sae = make_sae(SAEConfig("topk", 8, 16, k=2))
    d = save_sae(sae, tmp_path / "a")
    (d / "sae.json").write_text("{not json")
    with pytest.raises(SAEFileError, match="not valid JSON"):
        load_sae(d)
    d = save_sae(sae, tmp_path / "b")
    (d / "sae.safetensors").write_bytes(b"garbage")
    with pytest.raises(SAEFileError, match="not a readable safetensors"):
        load_sae(d)
    d = save_sae(sae, tmp_path / "c")
    (d / "sae.safetensors").unlink()
    with pytest.raises(SAEFileError, match="do not exist"):
        load_sae(d)
    d = save_sae(sae, tmp_path / "e")
    (d / "sae.json").write_text(json.dumps({**sae.cfg.to_dict(), "d_sae": 32}))
    with pytest.raises(SAEFileError, match="has shape"):
        load_sae(d)


def test_d_in_mismatch_with_site(tiny, tmp_path):
    sae = make_sae(SAEConfig("topk", tiny.d_model + 1, 16, k=2, site="resid_post:1"))
    d = save_sae(sae, tmp_path / "m")
    with pytest.raises(ShapeError, match=f"d_in={tiny.d_model + 1} does not match site resid_post:1"):
        load_sae(d, session=tiny)
