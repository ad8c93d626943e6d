"""Trace and edit studio on the tiny model: trace -> layer pick, apply -> measured, undo exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("editing")

from editing import RomeConfig  # noqa: E402
from widgets import Controller  # noqa: E402
from widgets.edit_studio import TraceEditStudio  # noqa: E402

PROMPT, SUBJECT, TARGET = "Paris is the capital of", "Paris", "the"


def test_trace_apply_undo(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    ctl = Controller(tiny)
    ctl.trace_samples, ctl.stats_tokens = 2, 2000
    cfg = RomeConfig(steps=5, prefixes_per_length=1)
    calls = []

    def apply_edit(*a, **k):
        calls.append(a)
        return ctl.apply_edit(*a, rome_config=cfg, **k)

    w = {ly: tiny.model.blocks[ly].mlp.W_out.detach().clone() for ly in range(tiny.n_layers)}
    studio = TraceEditStudio(ctl.trace, apply_edit, ctl.undo_edit, PROMPT, SUBJECT, TARGET,
                             n_layers=tiny.n_layers, run_async=False)
    studio.run_trace()
    res = studio.trace_result
    assert set(res.scores) == {"resid", "mlp"} and len(studio.trace_box.children) == 2
    assert studio.layer.value == int(res.subject_last_curve("mlp").argmax())
    np.testing.assert_allclose(np.array(studio.trace_box.children[0].data[0].z, dtype=float),
                               res.scores["resid"].T.numpy(), rtol=1e-5)
    studio.layer.value = 1
    studio.apply()
    out = studio.outcome
    assert calls[-1] == (PROMPT, SUBJECT, TARGET, 1) and out.active
    # the measured "after" is the live edited model's probability
    tid = tiny.token_id(" the")
    p_now = float(torch.softmax(tiny.last_logits(PROMPT)[0].float(), -1)[tid])
    assert out.p_after["target"] == pytest.approx(p_now, rel=1e-5)
    assert not torch.equal(tiny.model.blocks[1].mlp.W_out, w[1])
    assert studio.bars is not None and not studio.undo_btn.disabled
    assert "Edit diff" in studio.compare.value
    studio.undo()
    assert not studio.outcome.active and studio.undo_btn.disabled
    for ly in range(tiny.n_layers):
        assert torch.equal(tiny.model.blocks[ly].mlp.W_out, w[ly])
    assert "undone" in studio.static_html(include_plotlyjs=False)
