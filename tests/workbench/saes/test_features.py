"""Codes, top-activating examples (against brute force), histograms, vocabulary reading."""

from __future__ import annotations

import torch

from workbench import Corpus, capture
from workbench.saes import (
    SAEConfig,
    decoder_vocab,
    encode_prompts,
    feature_contexts,
    harvest_features,
    make_sae,
)
from workbench.topk import StreamingTopK


def test_streaming_topk_matches_sort():
    g = torch.Generator().manual_seed(0)
    vals = torch.randn(500, 7, generator=g)
    tk = StreamingTopK(7, 5)
    for i in range(0, 500, 37):
        tk.update(vals[i:i + 37], torch.arange(i, min(i + 37, 500)))
    ref_v, ref_i = vals.topk(5, dim=0)
    assert torch.equal(tk.values, ref_v.T) and torch.equal(tk.ids, ref_i.T)


def test_encode_prompts_matches_capture(tiny):
    sae = make_sae(SAEConfig("topk", tiny.d_model, 32, k=4, site="mlp_out:1"))
    pc = encode_prompts(tiny, sae, ["Paris is the capital", "Hi"])
    x = capture(tiny, ["Paris is the capital", "Hi"], ["mlp_out:1"])["mlp_out:1"]
    assert pc.codes.shape[:2] == x.shape[:2] and pc.codes.shape[-1] == 32
    n = int(pc.lengths[1])
    assert torch.allclose(pc.codes[1, :n], sae.encode(x[1, :n]), atol=1e-6)
    assert (pc.codes[1, n:] == 0).all()


def test_harvest_top_examples_brute_force(tiny, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    sae = make_sae(SAEConfig("relu", tiny.d_model, 16, site="resid_post:0", skip_first_position=False))
    h = harvest_features(tiny, sae, corpus, k=3, max_tokens=1024, window=32, tokens_per_batch=256,
                         progress=False)
    # brute force over the same windows
    allv, allo = [], []
    for wb in corpus.batches(tiny, window=32, tokens_per_batch=256, max_tokens=1024, progress=False):
        x = capture(tiny, tiny.batch_from_ids(wb.tokens.tolist()), ["resid_post:0"])["resid_post:0"]
        allv.append(sae.encode(x).reshape(-1, 16))
        allo.append(wb.offsets().reshape(-1))
    v, o = torch.cat(allv), torch.cat(allo)
    ref = v.topk(3, dim=0)
    assert torch.allclose(h.top_values, ref.values.T.clamp_min(0), atol=1e-5)
    for f in range(16):  # each kept offset really holds the kept value (ties may reorder)
        for val, off in zip(h.top_values[f], h.top_offsets[f]):
            if val > 0:
                assert torch.isclose(v[o == off, f], val, atol=1e-5).any()
    assert torch.allclose(h.frequencies, (v > 0).float().mean(0))
    assert torch.equal(h.histograms.sum(1), (v > 0).sum(0).float())
    rows = feature_contexts(corpus, h, 0)
    assert rows and rows[0]["token"] == tiny.tokenizer.decode([int(corpus.ids[rows[0]["offset"]])])


def test_decoder_vocab_is_logit_lens_of_row(tiny):
    sae = make_sae(SAEConfig("topk", tiny.d_model, 32, k=4, site="resid_post:1"))
    r = decoder_vocab(tiny, sae, 5, k=3)
    logits = tiny.unembed(sae.W_dec[5][None])[0]
    assert list(r.top_tokens) == tiny.to_str_tokens(logits.topk(3).indices)
    z = make_sae(SAEConfig("topk", tiny.d_head, 8, k=2, site="attn_z:1", head=1))
    rz = decoder_vocab(tiny, z, 2, k=3)
    d = z.W_dec[2] @ tiny.model.blocks[1].attn.W_O[1]
    assert list(rz.top_tokens) == tiny.to_str_tokens(tiny.unembed(d[None])[0].topk(3).indices)
