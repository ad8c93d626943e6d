"""Memory harvest: top-k equals brute force, index round trip, examples, agreement."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.memories import MemoryIndex, harvest
from workbench.memory_agreement import agreement


@pytest.fixture(scope="module")
def corpus(tiny, small_corpus_path):
    return wb.Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)


def test_harvest_topk_equals_brute_force(tiny, corpus):
    idx = harvest(tiny, corpus, k=5, window=32, tokens_per_batch=256, progress=False)
    # brute force: every coefficient of every token, then top-k per key
    acts, offs = {0: [], 1: []}, []
    for b in corpus.batches(tiny, window=32, tokens_per_batch=1024, progress=False):
        cap = wb.capture(tiny, tiny.batch_from_ids(b.tokens.tolist()), ["mlp_post:0", "mlp_post:1"])
        for layer in (0, 1):
            acts[layer].append(cap[f"mlp_post:{layer}"].reshape(-1, tiny.d_mlp))
        offs.append(b.offsets().reshape(-1))
    off = torch.cat(offs)
    assert idx.n_tokens == len(off)
    for layer in (0, 1):
        a = torch.cat(acts[layer])
        top = a.topk(5, dim=0)
        torch.testing.assert_close(idx.values[layer], top.values.T, atol=1e-5, rtol=1e-4)
        # offsets agree wherever values are not tied
        got = idx.offsets[layer]
        want = off[top.indices.T]
        assert (got == want).float().mean() > 0.95
        torch.testing.assert_close(idx.frequency[layer], (a > 0).float().mean(0))
        torch.testing.assert_close(idx.mean[layer], a.mean(0), atol=1e-5, rtol=1e-4)


def test_index_round_trip_and_examples(tiny, corpus, tmp_path):
    idx = harvest(tiny, corpus, layers=[1], k=3, window=32, progress=False)
    back = MemoryIndex.load(idx.save(tmp_path / "idx"))
    assert torch.equal(back.values, idx.values) and torch.equal(back.offsets, idx.offsets)
    assert back.layers == (1,) and back.corpus_tokens == len(corpus)
    ex = back.examples(1, 10, corpus, context=8)
    assert len(ex) == 3 and ex[0].coefficient >= ex[-1].coefficient
    o = ex[0].offset
    assert ex[0].trigger == tiny.tokenizer.decode([int(corpus.ids[o])])
    with pytest.raises(wb.WorkbenchError, match="not harvested"):
        back.examples(0, 1, corpus)
    with pytest.raises(wb.NeuronOutOfRange):
        back.examples(1, 999, corpus)
    with pytest.raises(wb.WorkbenchError, match="not a memory index"):
        MemoryIndex.load(tmp_path)


def test_agreement_counts_planted_match(tiny, corpus):
    idx = harvest(tiny, corpus, layers=[1], k=3, window=32, progress=False)
    table = agreement(tiny, idx, corpus, k_tokens=tiny.d_vocab, prefixes=1, composition_tokens=128)
    # with k_tokens = the whole vocabulary every key agrees, and so does the baseline
    assert table.agreement == (1.0,) and table.baseline == (1.0,)
    table = agreement(tiny, idx, corpus, k_tokens=5, composition_tokens=128, top_memories=tiny.d_mlp)
    assert 0.0 <= table.agreement[0] <= 1.0
    assert table.composition[0] is not None and 0.0 <= table.composition[0] <= 1.0


def test_harvest_bad_inputs(tiny, corpus):
    with pytest.raises(wb.LayerOutOfRange):
        harvest(tiny, corpus, layers=[5], progress=False)
    with pytest.raises(wb.ShapeError, match="k=0"):
        harvest(tiny, corpus, k=0, progress=False)
    with pytest.raises(wb.CorpusError):
        wb.Corpus.load([" ", ""], tiny.tokenizer)
