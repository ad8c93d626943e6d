"""The frozen model's weights (`workbench.graphs.weights.model_weights`): float32 copies of a
half-precision session, one copy for tied embeddings."""

from __future__ import annotations

import pytest
import torch

from workbench.graphs.weights import model_weights
from workbench.testing import tiny_session


def _orig(m):
    while getattr(m, "_original_component", None) is not None:
        m = m._original_component
    return m


@pytest.mark.parametrize("tied", [True, False])
def test_float32_copies_and_tied_embeddings(tied):
    s = tiny_session("llama")                       # ties its embeddings, as SmolLM2 does
    head, emb = _orig(s.hf_model.lm_head), _orig(s.hf_model.model.embed_tokens)
    assert head.weight.data_ptr() == emb.weight.data_ptr()
    if not tied:
        head.weight = torch.nn.Parameter(head.weight.detach() * 2)
    s.hf_model.to(torch.bfloat16)
    w = model_weights(s)
    assert w.W_E.dtype == w.W_U.dtype == torch.float32
    assert torch.equal(w.W_U, head.weight.detach().float())
    assert torch.equal(w.W_E, emb.weight.detach().float())
    assert (w.W_U.data_ptr() == w.W_E.data_ptr()) == tied


def test_build_graph_reads_the_weights_once(monkeypatch):
    """build_graph with its faithfulness check makes one set of float32 copies, not two (at the
    Llama-3.1-8B shape a second set was 27 GiB, and the Gemma-3-12B graph ran out of 80 GiB)."""
    import workbench.graphs.frozen as frozen_mod
    from workbench.graphs import build_graph

    s = tiny_session()
    calls = []
    real = frozen_mod.model_weights

    def counting(session, *a, **k):
        calls.append(1)
        return real(session, *a, **k)

    monkeypatch.setattr(frozen_mod, "model_weights", counting)
    g = build_graph(s, "The capital of France is", max_nodes=20, faithfulness_nodes=3, progress=False)
    assert "faithfulness_spearman" in g.summary            # the check ran
    assert len(calls) == 1


def _storage_bytes(w) -> int:
    seen, n = set(), 0

    def add(t):
        nonlocal n
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            n += t.numel() * t.element_size()

    for lw in w.layers:
        for v in vars(lw).values():
            add(v)
            for t in vars(v).values() if hasattr(v, "__dataclass_fields__") else ():
                add(t)
    for v in (w.W_E, w.W_U, w.b_U, w.ln_final.w):
        add(v)
    return n


def test_copy_plan_matches_the_copies_and_refuses_what_does_not_fit(monkeypatch):
    """copy_bytes (the frozen model's memory plan) is the bytes model_weights allocates on a bf16
    session, to 1% (0 on a float32 one); with less free memory than that, one clear error before
    any copy is made."""
    import workbench.memplan as memplan
    from workbench.graphs.weights import copy_bytes
    from workbench.memplan import OutOfMemory

    s = tiny_session("llama")
    assert copy_bytes(s) == 0
    s.hf_model.to(torch.bfloat16)
    need = copy_bytes(s)
    got = _storage_bytes(model_weights(s))      # + the few vectors it makes (zero biases, norm scales)
    assert need <= got <= 1.01 * need
    monkeypatch.setattr(memplan, "free_bytes", lambda device: need - 1)
    with pytest.raises(OutOfMemory, match=r"needs .* GiB of torch.float32 weight copies; .* GiB is free"):
        model_weights(s)
