"""Transcoders (basis b's building block): training, save / load, and the model / layer checks."""

from __future__ import annotations

import pytest
import torch

from workbench import Corpus, capture
from workbench.saes.config import SAEConfigError
from workbench.saes.transcoder import (
    TranscoderConfig,
    TranscoderMismatch,
    load_transcoder,
    save_transcoder,
)
from workbench.saes.transcoder_train import train_transcoder


def test_transcoder_learns_the_ffn_and_round_trips(tiny, small_corpus_path, tmp_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=16000)
    cfg = TranscoderConfig(d_model=64, d_tc=256, k=16, layer=1)
    res = train_transcoder(tiny, corpus, cfg, total_tokens=16000, batch_size=128, progress=False)
    tc = res.transcoder
    assert tc.cfg.model == tiny.name and res.l0 <= 16
    # independent check on held-out text (the corpus tail, never streamed): FFN output from input
    text = small_corpus_path.read_text(encoding="utf-8")
    cap = capture(tiny, [text[-3000 + i * 400:-2700 + i * 400] for i in range(6)], ["mlp_in:1", "mlp_out:1"])
    m = cap.mask.clone()
    m[:, 0] = False
    x, y = cap["mlp_in:1"][m].float(), cap["mlp_out:1"][m].float()
    with torch.no_grad():
        pred, codes = tc(x)
    fvu = float((pred - y).pow(2).sum(-1).mean() / (y - y.mean(0)).pow(2).sum(-1).mean())
    assert fvu < 0.5 and res.history[-1]["fvu"] < res.history[0]["fvu"]
    assert int((codes > 0).sum(-1).max()) <= 16
    save_transcoder(tc, tmp_path / "tc")
    back = load_transcoder(tmp_path / "tc", tiny, layer=1)
    with torch.no_grad():
        assert torch.equal(back(x)[0], pred)
    with pytest.raises(TranscoderMismatch, match="layer 1's FFN, not layer 0"):
        load_transcoder(tmp_path / "tc", tiny, layer=0)
    tc.cfg.model = "smollm2-135m"
    save_transcoder(tc, tmp_path / "other")
    with pytest.raises(TranscoderMismatch, match="trained on model 'smollm2-135m', not 'tiny-llama'"):
        load_transcoder(tmp_path / "other", tiny)


def test_transcoder_config_errors():
    with pytest.raises(SAEConfigError, match=r"k=99 is out of range; valid range is 1..64"):
        TranscoderConfig(d_model=8, d_tc=64, k=99)
    with pytest.raises(SAEConfigError, match="unknown transcoder config keys"):
        TranscoderConfig.from_dict({"d_model": 8, "width": 3})


@pytest.mark.parametrize("gemm", [False, True])
def test_sparse_step_equals_dense_autograd(gemm):
    """`transcoder_step` (sparse in k) gives the dense forward's prediction and every gradient,
    with dW_enc by the sparse product (the CPU's) or by the dense GEMM (CUDA's)."""
    from workbench.saes.transcoder import Transcoder
    from workbench.saes.transcoder_train import transcoder_step

    torch.manual_seed(0)
    tc = Transcoder(TranscoderConfig(d_model=16, d_tc=64, k=5, layer=0))
    with torch.no_grad():
        for p in tc.parameters():
            p.normal_(0, 0.3)
    x, y = torch.randn(32, 16), torch.randn(32, 16)
    grads = []
    for sparse in (False, True):
        tc.zero_grad()
        pred = transcoder_step(tc, x, gemm=gemm).pred if sparse else tc(x)[0]
        (pred - y).pow(2).sum().backward()
        grads.append((pred.detach(), {n: p.grad.clone() for n, p in tc.named_parameters()}))
    (p0, g0), (p1, g1) = grads
    assert torch.allclose(p0, p1, atol=1e-5)
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-4, rtol=1e-4), name
