"""Fixtures for the editing tests: small key statistics (tiny corpus, few tokens)."""

from __future__ import annotations

import pytest


def _stats(tiny, small_corpus_path, tmp_path_factory, layer: int):
    from editing import key_stats
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=4000)
    return key_stats(tiny, layer, corpus, n_tokens=2000, directory=tmp_path_factory.mktemp(f"cov{layer}"),
                     progress=False)


@pytest.fixture(scope="module")
def tiny_stats(tiny, small_corpus_path, tmp_path_factory):
    return _stats(tiny, small_corpus_path, tmp_path_factory, 1)


@pytest.fixture(scope="module")
def stats0(tiny, small_corpus_path, tmp_path_factory):
    """Key statistics of layer 0 (the z layer must lie below the tiny model's last layer)."""
    return _stats(tiny, small_corpus_path, tmp_path_factory, 0)


@pytest.fixture(scope="module")
def fast_cfg():
    from editing import RomeConfig

    return RomeConfig(prefix_lengths=(3,), prefixes_per_length=2, steps=5)


def _param_bytes(session) -> dict[str, bytes]:
    return {n: p.detach().cpu().contiguous().numpy().tobytes()
            for n, p in session.hf_model.named_parameters()}


@pytest.fixture(scope="session")
def param_bytes():
    """Every parameter's raw bytes, by name (for bitwise comparisons)."""
    return _param_bytes
