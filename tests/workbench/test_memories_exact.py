"""The streaming harvest is exact: ties included, independent of batch size, context stored."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.memories import harvest, pack_keys, unpack_keys


@pytest.fixture(scope="module")
def repeated(tiny):
    # the same short text many times: windows repeat, so coefficients tie exactly across windows
    text = "Alice met Bob at the market and they talked about the weather. " * 12
    return wb.Corpus.load([text], tiny.tokenizer)


def _brute(session, corpus, layer, k, window):
    acts, offs = [], []
    for b in corpus.batches(session, window=window, tokens_per_batch=100_000, progress=False):
        cap = wb.capture(session, session.batch_from_ids(b.tokens.tolist()), [f"mlp_post:{layer}"])
        b0 = int(b.bos)
        acts.append(cap[f"mlp_post:{layer}"][:, b0:].reshape(-1, session.d_mlp))
        offs.append(b.offsets()[:, b0:].reshape(-1))
    m, off = torch.cat(acts), torch.cat(offs)
    # (value desc, offset asc) by a full sort of packed keys, nothing streamed
    keys = pack_keys(m.T, off[None]).sort(dim=1, descending=True).values[:, :k]
    return unpack_keys(keys), m


def test_pack_unpack_order():
    v = torch.tensor([1.5, -0.0, 0.0, -2.0, 1.5, float("inf")])
    o = torch.tensor([7, 3, 2, 1, 4, 0])
    keys = pack_keys(v, o)
    order = keys.argsort(descending=True).tolist()
    assert order == [5, 4, 0, 2, 1, 3]          # value desc, then offset asc (-0.0 == 0.0)
    back_v, back_o = unpack_keys(keys)
    assert torch.equal(back_o, o) and torch.equal(back_v, v + 0.0)


@pytest.mark.parametrize("tokens_per_batch,stacked,group_bytes",
                         [(48, False, 0), (4096, False, 0), (48, True, 1), (48, True, 1 << 30)])
def test_harvest_equals_full_sort_with_ties(tiny, repeated, tokens_per_batch, stacked, group_bytes,
                                            monkeypatch):
    # stacked: the CUDA merge path (layers stacked transposed, in groups of 1 or all), on the CPU
    monkeypatch.setattr("workbench.memories._stacked", lambda device: stacked)
    monkeypatch.setattr("workbench.memories._GROUP_BYTES", group_bytes)
    idx = harvest(tiny, repeated, layers=[0, 1], k=6, window=16, tokens_per_batch=tokens_per_batch,
                  progress=False)
    (want_v, want_o), m = _brute(tiny, repeated, 1, 6, 16)
    n_tied = int((want_v[:, :-1] == want_v[:, 1:]).sum())
    assert n_tied > 0, "the repeated corpus should produce tied coefficients"
    assert torch.equal(idx.values[1], want_v) and torch.equal(idx.offsets[1], want_o)
    torch.testing.assert_close(idx.frequency[1], (m > 0).double().mean(0).float())


def test_stored_context_matches_corpus(tiny, small_corpus_path):
    corpus = wb.Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=1500)
    idx = harvest(tiny, corpus, layers=[0], k=4, window=32, context=6, show=3, progress=False)
    assert idx.context.shape == (1, tiny.d_mlp, 3, 7)
    for neuron in (0, 17, 100):
        a = idx.examples(0, neuron, tiny, context=5)          # from stored tokens
        b = idx.examples(0, neuron, corpus, context=5)[:3]   # from the corpus stream
        assert [(e.offset, e.trigger, e.next_token, e.prefix) for e in a] == \
               [(e.offset, e.trigger, e.next_token, e.prefix) for e in b]
    nxt = idx.next_token_ids(0, 3)
    assert torch.equal(nxt, idx.next_token_ids(0, corpus, 3))
    with pytest.raises(wb.WorkbenchError, match="no tokens to harvest|fewer than one window"):
        harvest(tiny, wb.Corpus.load(["hi"], tiny.tokenizer), window=32, progress=False)


@pytest.mark.parametrize("reverse,one_sort", [(False, False), (True, False), (False, "count"),
                                              (False, "sizes")])
def test_threshold_merge_equals_full_sort_in_any_offset_order(reverse, one_sort):
    # the sparse (threshold-crossing) merge, with heavy ties (values from 5 levels) and, when
    # `reverse`, batches arriving with smaller offsets than those stored (ties must then enter)
    from workbench.memories import _crossing_blocks, _TopK

    g = torch.Generator().manual_seed(0)
    G, U, k, t, nb = 2, 7, 4, 9, 6
    X = torch.randint(0, 5, (nb, G, t, U), generator=g).float()
    off = torch.arange(nb * t).view(nb, t)
    order = list(range(nb))[::-1] if reverse else list(range(nb))
    top = _TopK(G, U, k, "cpu")
    for j, b in enumerate(order):
        if j == 0:
            XT = X[b].transpose(1, 2)
            v, i, flag = top.select(slice(0, G), XT)
            for gg in flag.any(-1).nonzero().flatten().tolist():
                top.fix(XT[gg], off[b], v[gg], i[gg], flag[gg].nonzero().flatten())
            top.merge(slice(0, G), v, off[b][i])
        elif one_sort:   # the CUDA path's merge: crossings found in runs of 4 tokens, one sort
            hit = X[b] > top.values[:, :, -1][:, None, :]                # [G t U]
            per_key, blocks = hit.sum(1), _crossing_blocks(hit, 4)
            sizes = (int(per_key.sum()), int((per_key > 0).sum()), int(blocks.sum())) \
                if one_sort == "sizes" else None
            top.sorted_merge(slice(0, G), X[b], blocks, per_key, off[b], sizes=sizes, block=4)
        else:
            top.sparse_merge(slice(0, G), X[b], off[b], strict=not reverse)
    allX = X.permute(1, 3, 0, 2).reshape(G, U, nb * t)            # [G U all tokens]
    want = unpack_keys(pack_keys(allX, off.reshape(-1)).sort(dim=-1, descending=True).values[..., :k])
    assert torch.equal(top.values, want[0]) and torch.equal(top.offsets, want[1])
