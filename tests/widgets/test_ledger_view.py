"""The ledger view on the tiny model: per-row undo restores what it should, bitwise."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from editing import EditError, EditRequest, LayerUpdate, Ledger  # noqa: E402
from widgets.ledger_view import LedgerView  # noqa: E402


def _w_out(session):
    return {n: p.detach().clone() for n, p in session.hf_model.named_parameters() if "down_proj" in n}


def test_ledger_view_undo_one_row_and_all(tiny):
    before = _w_out(tiny)
    g = torch.Generator().manual_seed(0)
    ledger = Ledger(tiny)
    req = EditRequest("Paris is the capital of", "Paris", " France")
    ups = [LayerUpdate({layer: 1e-2 * torch.randn(tiny.d_mlp, tiny.d_model, generator=g)},
                       requests=(req,)) for layer in (0, 1)]
    e1, e2 = ledger.apply(ups[0]), ledger.apply(ups[1])
    view = LedgerView(ledger)
    assert len(view.rows.children) == 2
    view.select(e2.id)
    assert "Entry #2" in view.detail.value and "Paris" in view.detail.value
    only_second = _w_out(tiny)
    view.undo(e1.id)                                   # the first row's undo button
    assert len(view.rows.children) == 1
    name0 = [n for n in before if ".0." in n][0]
    assert torch.equal(_w_out(tiny)[name0], before[name0])    # layer 0 restored bitwise
    name1 = [n for n in before if ".1." in n][0]
    assert torch.equal(_w_out(tiny)[name1], only_second[name1])
    with pytest.raises(EditError, match="not in the ledger"):
        view.select(e1.id)
    view.undo_all_btn.click()
    assert all(torch.equal(p, before[n]) for n, p in _w_out(tiny).items())
    assert "no edits" in str(view.static_parts())
