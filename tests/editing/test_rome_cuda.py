"""ROME's v* step replayed as a CUDA graph gives the eager update (CUDA only; CI skips it)."""

from __future__ import annotations

import pytest
import torch

from editing import EditRequest, RomeConfig, compute_rome_update, key_stats
from workbench.corpus import Corpus
from workbench.testing import tiny_session

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_graph_step_equals_eager_step(arch, small_corpus_path, tmp_path):
    s = tiny_session(arch, n_layers=3, device="cuda")
    corpus = Corpus.load(small_corpus_path, s.tokenizer, max_tokens=4000)
    st = key_stats(s, 1, corpus, n_tokens=2000, directory=tmp_path, progress=False)
    req = EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "the")
    ups = [compute_rome_update(s, req, st, RomeConfig(prefix_lengths=(3,), prefixes_per_length=2,
                                                      steps=8, stop_nll=0.0, cuda_graph=g))
           for g in (False, True)]
    assert ups[0].info["steps"] == ups[1].info["steps"] == 8
    assert torch.allclose(ups[0].r, ups[1].r, rtol=1e-4, atol=1e-5)
    assert ups[0].info["nll"] == pytest.approx(ups[1].info["nll"], rel=1e-4)
