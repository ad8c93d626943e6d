"""Key statistics: equal to an independent computation, cached, keyed by sample size."""

from __future__ import annotations

import torch

from editing import key_stats
from workbench.corpus import Corpus


def test_moment_matches_direct_computation(tiny, small_corpus_path, tmp_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=2000)
    st = key_stats(tiny, 1, corpus, n_tokens=512, window=64, directory=tmp_path, progress=False)
    # independent: run the HF model, read the down_proj input with a plain torch hook
    ids = corpus.ids[: st.n_tokens].view(-1, 64)
    got = []
    h = tiny.hf_model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda m, inp: got.append(inp[0].detach()))
    try:
        with torch.no_grad():
            tiny.hf_model(ids)
    finally:
        h.remove()
    k = got[0].reshape(-1, tiny.d_mlp).double()
    torch.testing.assert_close(st.moment.double(), k.T @ k / k.shape[0], atol=1e-6, rtol=1e-4)
    assert st.n_tokens == 512


def test_cache_hit_and_key(tiny, small_corpus_path, tmp_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=2000)
    a = key_stats(tiny, 0, corpus, n_tokens=256, window=64, directory=tmp_path, progress=False)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    b = key_stats(tiny, 0, corpus, n_tokens=256, window=64, directory=tmp_path, progress=False)
    assert b.key == a.key and torch.equal(a.moment, b.moment)
    c = key_stats(tiny, 0, corpus, n_tokens=128, window=64, directory=tmp_path, progress=False)
    assert c.key != a.key and len(list(tmp_path.glob("*.safetensors"))) == 2
    d = key_stats(tiny, 1, corpus, n_tokens=256, window=64, directory=tmp_path, progress=False)
    assert d.key != a.key
