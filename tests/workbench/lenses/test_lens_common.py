"""The common lens entry point."""

from __future__ import annotations

import pytest
import torch

from workbench import capture
from workbench.errors import LayerOutOfRange, ShapeError, WorkbenchError
from workbench.lenses import LENS_KINDS, LensNotFound, lens, load_lens


def test_logit_kind_is_session_unembed(tiny):
    cap = capture(tiny, "Paris is the capital of France", ["resid_post:0"])
    h = cap["resid_post:0"][0]
    assert torch.equal(lens(tiny, h, 0), tiny.unembed(h).float())
    assert LENS_KINDS == ("logit", "tuned", "jacobian")


def test_bad_inputs(tiny, tmp_path):
    h = torch.zeros(2, tiny.d_model)
    with pytest.raises(LayerOutOfRange, match="layer=2"):
        lens(tiny, h, 2)
    with pytest.raises(ShapeError, match="d_model=64"):
        lens(tiny, torch.zeros(2, 5), 0)
    with pytest.raises(WorkbenchError, match="kind='nope'"):
        load_lens(tiny, "nope")
    with pytest.raises(LensNotFound):
        lens(tiny, h, 0, "tuned", path=tmp_path / "none.safetensors")
