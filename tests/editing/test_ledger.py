"""The edit ledger: undo any entry bitwise, save and replay bit for bit, export, bad undo."""

from __future__ import annotations

import pytest
import torch

from editing import EditError, LayerUpdate, Ledger, active_edits, apply


def _updates(session, n: int = 3) -> list[LayerUpdate]:
    """Dense random updates of one or both layers (the ledger's mechanics need no meaning)."""
    g = torch.Generator().manual_seed(1)
    layer_sets = [(0,), (0, 1), (1,), (0,)]
    return [LayerUpdate({layer: 1e-2 * torch.randn(session.d_mlp, session.d_model, generator=g)
                         for layer in layer_sets[i % 4]}, method="memit") for i in range(n)]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_undo_any_entry_restores_every_parameter(tiny, param_bytes, which):
    before = param_bytes(tiny)
    ups = _updates(tiny)
    led = Ledger(tiny)
    entries = [led.apply(u) for u in ups]
    led.undo(entries[which])
    after_undo = param_bytes(tiny)
    led.undo_all()
    assert param_bytes(tiny) == before and active_edits(tiny) == []
    # the same as never having applied it: the others alone, in order
    handles = [apply(tiny, u) for i, u in enumerate(ups) if i != which]
    assert param_bytes(tiny) == after_undo
    for h in reversed(handles):
        h.undo()
    assert param_bytes(tiny) == before


def test_undo_last_and_bad_undo(tiny, param_bytes):
    before = param_bytes(tiny)
    led = Ledger(tiny)
    a, b = (led.apply(u) for u in _updates(tiny, 2))
    mid = param_bytes(tiny)
    assert led.undo_last().id == b.id
    with pytest.raises(EditError, match=rf"entry {b.id} is not in the ledger; its entries are \[{a.id}\]"):
        led.undo(b.id)
    with pytest.raises(EditError, match="entry 99 is not in the ledger"):
        led.undo(99)
    assert param_bytes(tiny) != mid and param_bytes(tiny) != before
    led.undo_all()
    assert param_bytes(tiny) == before
    with pytest.raises(EditError, match="empty"):
        led.undo_last()


def test_entry_records_hashes_norms_and_outcome(tiny):
    led = Ledger(tiny)
    up = _updates(tiny, 2)[1]
    try:
        e = led.apply(up, outcome={"efficacy": 50.0})
        assert e.layers == [0, 1] and len(e.params) == 2 and e.hash_before != e.hash_after
        assert e.norms["1"] == pytest.approx(float(up.deltas[1].double().norm()))
        led.record(e, paraphrase=25.0)
        assert led.table()[0]["outcome"] == {"efficacy": 50.0, "paraphrase": 25.0}
    finally:
        led.undo_all()


def test_saved_ledger_replays_bitwise_on_a_fresh_session(tiny, tok_dir, tmp_path, param_bytes):
    from workbench.testing import tiny_session

    before = param_bytes(tiny)
    led = Ledger(tiny)
    es = [led.apply(u) for u in _updates(tiny, 3)]
    led.undo(es[1])                                   # a gap: the replay must skip it exactly
    edited = param_bytes(tiny)
    led.save(tmp_path / "ledger")
    led.export(tmp_path / "model")
    led.undo_all()
    assert param_bytes(tiny) == before

    fresh = tiny_session("llama", tokenizer_dir=tok_dir)
    assert param_bytes(fresh) == before
    led2 = Ledger.load(tmp_path / "ledger", fresh)
    assert [e.id for e in led2] == [es[0].id, es[2].id]
    assert param_bytes(fresh) == edited
    with pytest.raises(EditError, match="differ from those the ledger was saved from"):
        Ledger.load(tmp_path / "ledger", fresh)       # already edited: refused, nothing applied
    assert param_bytes(fresh) == edited
    led2.undo_all()
    assert param_bytes(fresh) == before

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    got = {n: p.detach().numpy().tobytes() for n, p in hf.named_parameters()}
    want = {n.replace("._original_component", ""): b for n, b in edited.items()}
    assert {n: got[n] for n in want} == want
