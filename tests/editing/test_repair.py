"""Repair rounds of the edit loop (`run_edits(repair_rounds=N)`) and the preserved keys they use."""

from __future__ import annotations

import pytest
import torch
from test_loop import CASES, FAST  # same folder (rootdir-relative import mode)

from editing import (
    AlphaEditConfig,
    AlphaEditState,
    EditError,
    EditRequest,
    KeyStats,
    LayerUpdate,
    Ledger,
    MemitConfig,
    active_edits,
    case_target_ids,
    compute_alphaedit_update,
    run_edits,
    score_cases,
)
from editing.memit import memit_solve, request_keys
from workbench.errors import WorkbenchError

# on the tiny model, round 0 leaves case 2 ("Rome is the capital of" -> France) below its true
# object and one repair round takes it (10 z* steps, l2 1)
AE = AlphaEditConfig(layers=(0,), l2=1.0, **{**FAST, "steps": 10})


def test_no_repair_is_the_plain_sequential_loop(tiny, stats0, param_bytes):
    """repair_rounds=0: the rows of AlphaEdit applied batch by batch through a ledger by hand."""
    before = param_bytes(tiny)
    run = run_edits(tiny, CASES, {0: stats0}, method="alphaedit", batch_size=2, config=AE, progress=False)
    ids = [case_target_ids(tiny, c) for c in CASES]
    state = AlphaEditState.from_stats({0: stats0}, AE.null_energy)
    led, at_edit = Ledger(tiny), []
    try:
        for lo in (0, 2):
            reqs = [EditRequest(c.prompt, c.subject, c.target_new) for c in CASES[lo : lo + 2]]
            up = compute_alphaedit_update(tiny, reqs, state, AE)
            led.apply(up)
            at_edit += score_cases(tiny, CASES[lo : lo + 2], ids[lo : lo + 2])
            state = state.after(up)
        final = score_cases(tiny, CASES, ids)
    finally:
        led.undo_all()
    assert [r["edited"] for r in run.rows] == [sc.to_dict() for sc in final]
    assert [r["at_edit"] for r in run.rows] == [sc.to_dict() for sc in at_edit]
    s = run.summary
    assert s["repair_rounds"] == 0 and s["repair_edits"] == [] and s["repair_took"] == []
    assert s["efficacy_before_repair"] == s["efficacy_at_edit"]
    assert len(run.ledger) == 2 and all("repair_round" not in e["outcome"] for e in run.ledger)
    assert all(r["repaired"] == 0 for r in run.rows)
    assert param_bytes(tiny) == before


def test_repair_rounds_re_edit_what_did_not_take(tiny, stats0, param_bytes):
    before = param_bytes(tiny)
    plain = run_edits(tiny, CASES, {0: stats0}, method="alphaedit", batch_size=2, config=AE, progress=False)
    run = run_edits(tiny, CASES, {0: stats0}, method="alphaedit", batch_size=2, config=AE, progress=False,
                    repair_rounds=2)
    s = run.summary
    missed = [r["case_id"] for r in plain.rows if not r["at_edit"]["efficacy"]]
    assert missed == [2]                                     # round 0 is the plain loop's batch
    assert s["efficacy_before_repair"] == plain.summary["efficacy_at_edit"] == 75.0
    assert s["repair_rounds"] == 2 and s["repair_edits"] == [1, 0] and s["repair_took"] == [1, 0]
    assert [r["repaired"] for r in run.rows] == [0, 1, 0, 0]
    assert s["efficacy_at_edit"] == 100.0
    from widgets.html.editing import repair_rows  # the edit HTML's repair table

    rows, caption = repair_rows(s)
    assert rows == [{"round": 1, "requests re-edited": 1, "took right after": 1},
                    {"round": 2, "requests re-edited": 0, "took right after": 0}]
    assert "first update 75.0, after its repair rounds 100.0" in caption
    assert repair_rows(plain.summary) == ([], "")
    # each applied round is its own ledger entry: batch 1's first update, its repair, batch 2
    assert [e["n_requests"] for e in run.ledger] == [2, 1, 2]
    assert [e["outcome"].get("repair_round") for e in run.ledger] == [None, 1, None]
    assert run.ledger[1]["requests"][0]["subject"] == "Rome"
    assert run.ledger[1]["hash_before"] == run.ledger[0]["hash_after"]
    assert param_bytes(tiny) == before and active_edits(tiny) == []


def test_memit_fresh_state_repair_is_undone(tiny, stats0, param_bytes):
    """Fresh state: every round of a batch is undone before the next batch; the counts add up."""
    before = param_bytes(tiny)
    cfg = MemitConfig(layers=(0,), lam=1e5, **{**FAST, "steps": 10})      # too stiff: some miss
    run = run_edits(tiny, CASES, {0: stats0}, method="memit", batch_size=2, config=cfg, progress=False,
                    repair_rounds=2)
    s = run.summary
    assert s["efficacy_before_repair"] < 100.0 and s["repair_edits"][0] > 0
    assert sum(r["repaired"] for r in run.rows) == sum(s["repair_edits"])
    assert all(t <= e for t, e in zip(s["repair_took"], s["repair_edits"]))
    assert run.ledger == [] and param_bytes(tiny) == before and active_edits(tiny) == []


@pytest.mark.parametrize("method, cfg, patch", [
    ("alphaedit", AE, "compute_alphaedit_update"),
    ("memit", MemitConfig(layers=(0,), lam=1e5, **{**FAST, "steps": 10}), "compute_memit_update"),
])
def test_an_error_in_a_repair_round_leaves_the_model_as_it_began(tiny, stats0, param_bytes, monkeypatch,
                                                                 method, cfg, patch):
    import editing.loop as loop

    real, calls = getattr(loop, patch), []

    def second_call_fails(*a, **k):                          # the first batch's first repair round
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(*a, **k)

    monkeypatch.setattr(loop, patch, second_call_fails)
    before = param_bytes(tiny)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_edits(tiny, CASES[:2], {0: stats0}, method=method, batch_size=2, config=cfg, progress=False,
                  repair_rounds=1)
    assert len(calls) == 2 and param_bytes(tiny) == before and active_edits(tiny) == []


@pytest.mark.parametrize("bad", [-1, -7, True])     # (other types: the signature says int)
def test_bad_repair_rounds(tiny, stats0, bad):
    with pytest.raises(WorkbenchError, match=f"repair_rounds={bad!r} must be an integer >= 0"):
        run_edits(tiny, CASES, {0: stats0}, method="alphaedit", batch_size=2, config=AE, repair_rounds=bad)


def test_cli_rejects_negative_repair_rounds(monkeypatch, capsys):
    from workbench.cli import main
    from workbench.session import Session

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Session, "load", classmethod(lambda cls, *a, **k: boom()))
    assert main(["edit", "--method", "alphaedit", "--repair-rounds", "-2"]) == 2
    err = capsys.readouterr().err
    assert "--repair-rounds=-2 is out of range; give an integer >= 0" in err and err.count("\n") == 1, err


def _update(n: int, rows_per: int, d: int = 6) -> LayerUpdate:
    g = torch.Generator().manual_seed(0)
    reqs = tuple(EditRequest(f"S{i} is in", f"S{i}", " X") for i in range(n))
    keys = {0: torch.randn(rows_per * n, d, generator=g), 1: torch.randn(rows_per * n, d, generator=g)}
    return LayerUpdate({k: torch.zeros(d, 3) for k in keys}, reqs, "alphaedit", keys)


def test_request_keys_take_both_rows_of_a_pinned_request():
    up = _update(3, 2)                                   # pin_prompt: rows i and 3 + i
    got = request_keys(up, [0, 2])
    for layer, K in up.keys.items():
        assert torch.equal(got[layer], K[[0, 2, 3, 5]])
    assert torch.equal(request_keys(_update(3, 1), [1])[0], _update(3, 1).keys[0][[1]])
    every = request_keys(up)                             # None: every request's rows
    assert every.keys() == up.keys.keys() and all(torch.equal(every[k], up.keys[k]) for k in up.keys)
    with pytest.raises(EditError, match=r"request positions \[3\] are out of range.*\(0..2\)"):
        request_keys(up, [3])


def test_state_after_some_requests_preserves_their_keys_only():
    up = _update(3, 2)
    P = {layer: torch.eye(6) for layer in (0, 1)}
    state = AlphaEditState(P, {layer: torch.zeros(6, 6, dtype=torch.float64) for layer in (0, 1)})
    some, every = state.after(up, [1]), state.after(up)
    for layer, K in up.keys.items():
        k = K[[1, 4]].double()
        torch.testing.assert_close(some.preserved[layer], k.T @ k)
        assert torch.equal(every.preserved[layer], K.double().T @ K.double())
    assert some.batches == every.batches == 1


def test_memit_solve_keeps_preserved_keys():
    """A heavily weighted preserved key's output barely moves; without it, it moves."""
    g = torch.Generator().manual_seed(1)
    d, m = 8, 4
    A = torch.randn(32, d, generator=g)
    stats = KeyStats(0, A.T @ A / 32, 32, "", "")
    K, R = torch.randn(2, d, generator=g), torch.randn(2, m, generator=g)
    kp = (K[0] + 0.5 * torch.randn(d, generator=g))[None].double()      # near an edited key
    free = memit_solve(stats, K, R, 0.1)
    kept = memit_solve(stats, K, R, 0.1, preserved=1e6 * kp.T @ kp)
    assert float((kp @ kept).norm()) < 1e-3 * float((kp @ free).norm())
    torch.testing.assert_close(memit_solve(stats, K, R, 0.1, preserved=torch.zeros(d, d)), free)
