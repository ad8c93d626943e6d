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


def test_out_of_memory_halves_and_counts_once(tiny, small_corpus_path, tmp_path, monkeypatch):
    """A batch that runs out of memory is redone in halves: same moment, same token count."""
    import editing.covariance as cov
    from workbench.capture import capture_tokens

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=2000)
    want = key_stats(tiny, 1, corpus, n_tokens=512, window=64, directory=tmp_path / "a", progress=False)
    calls = []

    def flaky(session, batch, sites, **kw):
        calls.append(batch.tokens.shape[0])
        if batch.tokens.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return capture_tokens(session, batch, sites, **kw)

    monkeypatch.setattr(cov, "capture_tokens", flaky)
    got = key_stats(tiny, 1, corpus, n_tokens=512, window=64, tokens_per_batch=512,
                    directory=tmp_path / "b", progress=False)
    assert max(calls) > 2 and min(calls) <= 2          # it failed, then ran in halves
    assert got.n_tokens == want.n_tokens
    torch.testing.assert_close(got.moment, want.moment, atol=1e-6, rtol=1e-5)
