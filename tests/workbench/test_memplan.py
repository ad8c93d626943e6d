"""Memory plans for batch jobs, out-of-memory halving, and the harvest under both (issue 14)."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.memories import harvest, harvest_topk
from workbench.memplan import OutOfMemory, halving, per_token_bytes, plan_batch


def test_plan_fits_the_memory_and_rounds_to_windows(tiny):
    sites = [wb.Site("mlp_post", 0), wb.Site("resid_post", 1)]
    per = per_token_bytes(tiny, sites)
    work = int(1.5 * (8 * tiny.d_model + 4 * tiny.d_mlp) * 4)
    assert per == (tiny.d_mlp + tiny.d_model) * 4 + work          # fp32 captured + one layer's work
    roomy = plan_batch(tiny, sites, window=64, requested=8192, available=1 << 40)
    assert roomy.tokens_per_batch == 8192 and not roomy.limited
    tight = plan_batch(tiny, sites, window=64, requested=8192, available=per * 1000, fraction=1.0)
    assert tight.limited and tight.tokens_per_batch == 960           # 1000 tokens -> 15 windows
    assert plan_batch(tiny, sites, 64, 8192, available=0).tokens_per_batch == 64   # at least a window
    with pytest.raises(wb.WorkbenchError, match="fraction"):
        plan_batch(tiny, sites, 64, 8192, fraction=0)


def test_halving_splits_until_it_fits():
    calls = []

    def run(i, j):
        calls.append((i, j))
        if j - i > 3:
            raise torch.OutOfMemoryError("fake")
        return list(range(i, j))

    out = halving(run, 0, 20, rows=16)
    assert [x for part in out for x in part] == list(range(20))
    assert max(len(p) for p in out) == 2                             # 16 -> 8 -> 4 -> 2, then kept
    with pytest.raises(OutOfMemory, match="one row"):
        halving(lambda i, j: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), 0, 4, rows=1)


def test_harvest_survives_out_of_memory_with_the_same_result(tiny, small_corpus_path, monkeypatch):
    corpus = wb.Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    want = harvest_topk(tiny, corpus, layers=[0, 1], k=5, window=32, tokens_per_batch=1024, progress=False)
    real = wb.capture_tokens
    seen = []

    def flaky(session, batch, sites, **kw):
        seen.append(len(batch))
        if len(batch) > 8:
            raise torch.OutOfMemoryError("fake: too many rows")
        return real(session, batch, sites, **kw)

    monkeypatch.setattr("workbench.memories.capture_tokens", flaky)
    got = harvest_topk(tiny, corpus, layers=[0, 1], k=5, window=32, tokens_per_batch=1024, progress=False)
    assert seen[0] == 32 and got["rows"] == 8                        # 32 rows -> 16 -> 8, then kept
    for key in ("values", "offsets", "fires"):
        assert torch.equal(got[key], want[key]), key
    torch.testing.assert_close(got["sum"], want["sum"])
    assert got["n"] == want["n"] and got["paths"] == {"eager": got["paths"]["eager"]}


def test_large_batches_keep_the_one_sort_merge_and_stay_exact(tiny, monkeypatch):
    # t + k >= 2^15 tokens per batch used to switch silently to the two-sort merge
    text = "Alice met Bob at the market and they talked about the weather today. " * 1800
    corpus = wb.Corpus.load([text], tiny.tokenizer)
    assert len(corpus) > 2 * 33_000

    def never(*a, **k):
        raise AssertionError("the two-sort merge ran on strictly ordered batches")

    monkeypatch.setattr("workbench.memories._TopK.sparse_merge", never)
    idx = harvest(tiny, corpus, layers=[1], k=4, window=64, tokens_per_batch=33_024, progress=False)
    acts, offs = [], []
    for b in corpus.batches(tiny, window=64, tokens_per_batch=100_000, progress=False):
        cap = wb.capture(tiny, tiny.batch_from_ids(b.tokens.tolist()), ["mlp_post:1"])
        acts.append(cap["mlp_post:1"].reshape(-1, tiny.d_mlp))
        offs.append(b.offsets().reshape(-1))
    from workbench.memories import pack_keys, unpack_keys

    m, off = torch.cat(acts), torch.cat(offs)
    want_v, want_o = unpack_keys(pack_keys(m.T, off[None]).sort(dim=1, descending=True).values[:, :4])
    assert idx.n_tokens == m.shape[0]
    assert torch.equal(idx.values[0], want_v) and torch.equal(idx.offsets[0], want_o)
