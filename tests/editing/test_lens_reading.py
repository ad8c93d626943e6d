"""ROME's value change r = v* - v read through a tuned lens: its linear part at the edited layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from editing import EditRequest, compute_rome_update
from editing.diff import edit_diff
from editing.outcome import apply_and_measure
from workbench.lenses import init_tuned_lens


@pytest.fixture(scope="module")
def update(tiny, tiny_stats, fast_cfg):
    req = EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Paris")
    return compute_rome_update(tiny, req, tiny_stats, fast_cfg)


def test_r_read_through_tuned_lens(tiny, update, param_bytes):
    g = torch.Generator().manual_seed(0)
    base = init_tuned_lens(tiny)
    lens = dataclasses.replace(base, A=0.3 * torch.randn(base.A.shape, generator=g),
                               b=2.0 * torch.randn(base.b.shape, generator=g))
    r, layer = update.r.float(), update.layer
    want = tiny.unembed(r + r @ lens.A[layer]).float()              # linear part, no bias
    d = edit_diff(tiny, update, top_k=5, lens=lens)
    assert [t for t, _ in d.value_tokens] == tiny.to_str_tokens(want.topk(5).indices)
    assert d.reading == "tuned" and d.to_dict()["reading"] == "tuned"
    assert edit_diff(tiny, update, top_k=5).reading == "logit"
    before = param_bytes(tiny)
    out, handle = apply_and_measure(tiny, update, gen_tokens=2, lens=lens)
    handle.undo()
    assert param_bytes(tiny) == before
    assert list(out.r_promotes) == [tiny.tokenizer.decode([t]) for t in want.topk(8).indices.tolist()]
    assert out.lens == "tuned"
