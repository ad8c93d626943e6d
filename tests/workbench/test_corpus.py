"""Corpus streaming: windows, offsets, token budgets, errors."""

from __future__ import annotations

import pytest
import torch

import workbench as wb


def test_windows_cover_stream_in_order(tiny, small_corpus_path):
    corpus = wb.Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=5000)
    assert len(corpus) == 5000
    seen = []
    for wbatch in corpus.batches(tiny, window=64, tokens_per_batch=640, progress=False):
        assert wbatch.tokens.shape[1] == 64 and wbatch.tokens.shape[0] <= 10
        off = wbatch.offsets()
        torch.testing.assert_close(wbatch.tokens, corpus.ids[off.cpu()].to(wbatch.tokens.device))
        assert wbatch.span == (int(off.min()), int(off.max()))
        seen.extend(wbatch.starts.tolist())
    assert seen == list(range(0, 64 * (5000 // 64), 64))


def test_bos_windows(tiny_gemma, small_corpus_path):
    corpus = wb.Corpus.load(small_corpus_path, tiny_gemma.tokenizer, max_tokens=2000)
    first = next(corpus.batches(tiny_gemma, window=32, tokens_per_batch=128, progress=False))
    assert first.bos and (first.tokens[:, 0] == tiny_gemma.tokenizer.bos_token_id).all()
    off = first.offsets()
    assert (off[:, 0] == -1).all()
    assert first.span == (int(off[:, 1:].min()), int(off[:, 1:].max()))    # BOS column not counted
    torch.testing.assert_close(first.tokens[:, 1:], corpus.ids[off[:, 1:]])


def test_max_tokens_and_context(tiny):
    corpus = wb.Corpus.load(["Paris is the capital of France.", "Rome is in Italy."], tiny.tokenizer)
    before, tok, after = corpus.context(3, before=3, after=2)
    assert tok == tiny.tokenizer.decode([int(corpus.ids[3])])
    n = sum(b.tokens.numel() for b in corpus.batches(tiny, window=4, max_tokens=8, progress=False))
    assert n == 8


def test_corpus_errors(tiny, tmp_path):
    with pytest.raises(wb.CorpusError, match="does not exist"):
        wb.Corpus.load(tmp_path / "nope.txt", tiny.tokenizer)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(wb.CorpusError, match="no text"):
        wb.Corpus.load(tmp_path / "empty.txt", tiny.tokenizer)
    (tmp_path / "d").mkdir()
    with pytest.raises(wb.CorpusError, match="no .txt"):
        wb.Corpus.load(tmp_path / "d", tiny.tokenizer)
    short = wb.Corpus.load(["Paris"], tiny.tokenizer)
    with pytest.raises(wb.CorpusError, match="fewer than one window"):
        list(short.batches(tiny, window=64, progress=False))
