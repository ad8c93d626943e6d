"""Embedded models: the gguf-only fallback loader agrees with the transformers path."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import UnknownModelError
from workbench.gguf_loader import load_gguf, unpermute_rotary
from workbench.models import EMBEDDED, cache_root


def test_unpermute_rotary_inverts_llamacpp_permutation():
    n, d = 3, 8
    w = torch.arange(n * d * 4, dtype=torch.float32).reshape(n * d, 4)
    # llama.cpp's permute: (n, 2, d/n/2... ) -> halves interleaved into pairs
    permuted = w.reshape(n, 2, d // 2, 4).swapaxes(1, 2).reshape(w.shape)
    torch.testing.assert_close(unpermute_rotary(permuted, n), w)


def test_cache_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()


@pytest.mark.real
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_gguf_only_loader_matches_transformers_path(name, request):
    session = request.getfixturevalue("smollm" if name == "smollm2-135m" else "gemma")
    model, _ = load_gguf(EMBEDDED[name].gguf_path())
    ids = torch.tensor([session.encode("The Eiffel Tower is located in the city of")])
    with torch.no_grad():
        ours, ref = model(ids).logits, session.hf_model(ids).logits
    assert (ours - ref).abs().max().item() < 1e-3
    assert ours[0, -1].argmax() == ref[0, -1].argmax()


def test_fallback_rejects_unknown_architecture(tmp_path):
    import gguf

    path = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnknownModelError, match="architecture='bert'"):
        load_gguf(path)
