"""SAELens cfg.json options: honoured exactly as SAELens defines them, or refused by name.

`_saelens_reference` re-implements SAELens's inference path literally (SAE.process_sae_in,
StandardSAE / TopKSAE / JumpReLUSAE.encode and decode, sae_lens 6.x): the loaded SAE must give
the same codes and reconstructions.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from workbench.saes import SAEFileError, load_sae


def _saelens_reference(x, w, cfg):
    """SAELens: sae_in = x - b_dec * apply_b_dec_to_input; hidden_pre = sae_in W_enc + b_enc;
    TopK with rescale: hidden_pre *= ||W_dec||; codes; decode (codes [/ ||W_dec||]) W_dec + b_dec."""
    sae_in = x - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    hidden = sae_in @ w["W_enc"] + w["b_enc"]
    arch = cfg["architecture"]
    norms = w["W_dec"].norm(dim=-1)
    if arch == "topk":
        if cfg.get("rescale_acts_by_decoder_norm", False):
            hidden = hidden * norms
        top = torch.topk(hidden, k=cfg["k"], dim=-1)
        codes = torch.zeros_like(hidden).scatter_(-1, top.indices, torch.relu(top.values))
    elif arch == "jumprelu":
        codes = torch.relu(hidden) * (hidden > w["threshold"]).to(hidden.dtype)
    else:
        codes = torch.relu(hidden)
    dec_in = codes / norms if cfg.get("rescale_acts_by_decoder_norm", False) else codes
    return codes, dec_in @ w["W_dec"] + w["b_dec"]


def _write(d, cfg, arch, d_in=12, d_sae=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.7,
         "b_enc": torch.randn(d_sae, generator=g) * 0.3, "b_dec": torch.randn(d_in, generator=g)}
    if arch == "jumprelu":
        w["threshold"] = torch.rand(d_sae, generator=g) * 0.5
    d.mkdir(parents=True)
    save_file(w, str(d / "sae_weights.safetensors"))
    full = {"architecture": arch, "d_in": d_in, "d_sae": d_sae,
            "hook_name": "blocks.1.hook_resid_post", **cfg}
    (d / "cfg.json").write_text(json.dumps(full))
    return w, full


def _x(d_in=12, n=64):
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(7)) * 2


@pytest.mark.parametrize("arch,cfg", [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("jumprelu", {"apply_b_dec_to_input": False}),
    ("topk", {"k": 5}),
    ("topk", {"k": 5, "apply_b_dec_to_input": False}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False}),
])
def test_options_honoured(tmp_path, arch, cfg):
    w, full = _write(tmp_path / "s", {**cfg, "normalize_activations": "none"}, arch)
    sae = load_sae(tmp_path / "s")
    x = _x()
    codes, recon = _saelens_reference(x, w, full)
    out = sae(x)
    assert torch.allclose(out.codes, codes, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out.recon, recon, atol=1e-4, rtol=1e-5)
    assert torch.allclose(sae.decode(sae.encode(x)), recon, atol=1e-4, rtol=1e-5)
    assert (out.codes > 0).any()


def test_options_change_the_codes(tmp_path):
    # the options matter: reading the file as if they were absent gives other codes
    w, full = _write(tmp_path / "s", {"k": 5, "rescale_acts_by_decoder_norm": True,
                                      "apply_b_dec_to_input": False}, "topk")
    codes, _ = _saelens_reference(_x(), w, full)
    plain, _ = _saelens_reference(_x(), w, {"architecture": "topk", "k": 5})
    assert (codes - plain).abs().max() > 0.1
    assert torch.allclose(load_sae(tmp_path / "s").encode(_x()), codes, atol=1e-5)


def test_plain_files_decode_exactly_as_before(tmp_path):
    # no option set: the weights are used as stored (bitwise), as the loader always did
    w, _ = _write(tmp_path / "s", {"k": 4, "apply_b_dec_to_input": True,
                                   "rescale_acts_by_decoder_norm": False,
                                   "normalize_activations": "none", "dtype": "float32",
                                   "device": "cpu", "model_name": "gpt2", "context_size": 128,
                                   "prepend_bos": True, "dataset_path": "x", "neuronpedia_id": None,
                                   "sae_lens_training_version": "5.1.0",
                                   "metadata": {"sae_lens_version": "6.5.0", "hook_name": "h"}},
                  "topk")
    sae = load_sae(tmp_path / "s")
    for k in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(sae, k), w[k]), k
    x = _x()
    assert torch.equal(sae.decode(sae.encode(x)), sae.encode(x) @ w["W_dec"] + w["b_dec"])


def test_pre6_topk_layout(tmp_path):
    w, _ = _write(tmp_path / "s", {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3},
                                   "hook_point": "blocks.1.hook_resid_post", "normalize_activations": False,
                                   "finetuning_scaling_factor": False}, "standard")
    sae = load_sae(tmp_path / "s")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 3
    codes, _ = _saelens_reference(_x(), w, {"architecture": "topk", "k": 3})
    assert torch.allclose(sae.encode(_x()), codes, atol=1e-5)


@pytest.mark.parametrize("arch,cfg,match", [
    ("standard", {"normalize_activations": "constant_norm_rescale"}, "normalize_activations='constant_norm_rescale'"),
    ("standard", {"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
    ("standard", {"normalize_activations": "expected_average_only_in"}, "expected_average_only_in"),
    ("standard", {"normalize_activations": True}, "expected_average_only_in"),
    ("standard", {"normalize_activations": "weird"}, "normalize_activations='weird'"),
    ("standard", {"finetuning_scaling_factor": True}, "finetuning_scaling_factor"),
    ("jumprelu", {"rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm"),
    ("standard", {"apply_b_dec_to_input": "yes"}, "apply_b_dec_to_input"),
    ("standard", {"some_new_option": 1}, "some_new_option"),
    ("standard", {"activation_fn": "tanh-relu"}, "activation_fn='tanh-relu'"),
    ("standard", {"reshape_activations": "hook_z"}, "reshape_activations"),
    ("gated", {}, "architecture='gated'"),
])
def test_refused_by_name(tmp_path, arch, cfg, match):
    _write(tmp_path / "s", cfg, arch)
    with pytest.raises(SAEFileError, match=match):
        load_sae(tmp_path / "s")
