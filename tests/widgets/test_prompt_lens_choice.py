"""The prompt explorer's lens dropdown: disabled with a note when no lens is saved; a tuned lens
read through the controller equals an independent computation on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from widgets import Controller, PromptExplorer
from workbench import capture, scale_neurons
from workbench.lenses import init_tuned_lens
from workbench.prompt_lens import UnitScale

PROMPT = "The quick brown fox jumps over the lazy"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def saved_tuned(tiny, cache):
    g = torch.Generator().manual_seed(0)
    base = init_tuned_lens(tiny)
    lens = dataclasses.replace(base, A=0.3 * torch.randn(base.A.shape, generator=g),
                               b=torch.randn(base.b.shape, generator=g))
    lens.save(session=tiny)
    return lens


def test_dropdown_disabled_with_note_when_no_lens_saved(tiny, cache):
    ctl = Controller(tiny, top_k=5)
    notes = ctl.lens_choices()
    assert notes["logit"] is None
    assert "no tuned lens is saved for tiny-llama" in notes["tuned"]
    assert "workbench lens-train --lens jacobian" in notes["jacobian"]
    view = PromptExplorer(ctl.prompt_lens(PROMPT), ctl.prompt_lens, ctl.sub_updates,
                          run_async=False, lenses=notes)
    assert view.lens_pick.disabled and list(view.lens_pick.options) == ["logit"]
    assert "no tuned lens is saved" in view.lens_note.value
    # a view built without lens choices has the logit lens only, disabled
    plain = PromptExplorer(ctl.prompt_lens(PROMPT), ctl.prompt_lens, ctl.sub_updates, run_async=False)
    assert plain.lens_pick.disabled and plain.lens.lens == "logit"


def test_tuned_lens_choice_redraws_cells_and_sub_updates(tiny, saved_tuned):
    ctl = Controller(tiny, top_k=5)
    notes = ctl.lens_choices()
    assert notes["tuned"] is None and notes["jacobian"] is not None
    view = PromptExplorer(ctl.prompt_lens(PROMPT), ctl.prompt_lens, ctl.sub_updates,
                          run_async=False, lenses=notes)
    assert not view.lens_pick.disabled and list(view.lens_pick.options) == ["logit", "tuned"]
    view.lens_pick.value = "tuned"                                 # the user picks the tuned lens
    assert view.lens.lens == "tuned" and "Tuned lens" in view.heat.layout.title.text
    cap = capture(tiny, PROMPT, [f"resid_post:{i}" for i in range(tiny.n_layers)])
    for layer in range(tiny.n_layers):
        h = cap[f"resid_post:{layer}"][0].float()
        p = torch.softmax(tiny.unembed(h + h @ saved_tuned.A[layer] + saved_tuned.b[layer]).float(), -1)
        np.testing.assert_allclose(np.array(view.heat.data[0].z, dtype=float)[layer],
                                   p.max(-1).values.numpy(), rtol=2e-3, atol=1e-4)
        np.testing.assert_array_equal(view.lens.top_ids[layer], p.argmax(-1).numpy())
    # the selected cell's sub-updates are read through the lens's linear part
    layer = view.subs.layer
    m = capture(tiny, PROMPT, [f"mlp_post:{layer}"])[f"mlp_post:{layer}"][0, -1].float()
    u = view.subs.by_magnitude[0]
    x = torch.sign(m[u.neuron]) * tiny.model.blocks[layer].mlp.W_out.detach().float()[u.neuron]
    want = tiny.unembed(x + x @ saved_tuned.A[layer]).float()
    assert [t.id for t in u.promoted] == want.topk(len(u.promoted)).indices.tolist()
    # an edit under the tuned lens: the changed cells equal a full recompute through the lens
    n = len(view.lens.str_tokens)
    view.set_factor(u.neuron, 0.0, 0, n - 1)
    assert view.lens.lens == "tuned" and view.lens.edits == (UnitScale(0, n - 1, u.neuron, 0.0),)
    cap = capture(tiny, PROMPT, [f"resid_post:{i}" for i in range(tiny.n_layers)],
                  interventions=[scale_neurons(0, [u.neuron], 0.0, positions=[n - 1])])
    for layer in range(tiny.n_layers):
        h = cap[f"resid_post:{layer}"][0].float()
        p = torch.softmax(saved_tuned.logits(tiny, h, layer), -1)
        np.testing.assert_allclose(view.lens.top_probs[layer], p.max(-1).values.numpy(), rtol=1e-4, atol=1e-6)
    view.lens_pick.value = "logit"                                 # and back
    assert view.lens.lens == "logit" and view.lens.edits


def test_controller_refuses_unknown_lens(tiny, cache):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="lens='psychic' is unknown"):
        Controller(tiny).prompt_lens(PROMPT, lens="psychic")
