"""Prompt explorer and its controller on the tiny model: control -> callback -> figure data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from widgets import Controller, PromptExplorer
from workbench import capture, ffn_weights, intervene, scale_neurons, zero_neurons
from workbench.errors import EmptyPromptError, NeuronOutOfRange, PositionOutOfRange
from workbench.prompt_lens import UnitScale
from workbench.vocab import value_tokens

PROMPT = "The quick brown fox jumps over the lazy"


@pytest.fixture()
def ctl(tiny):
    return Controller(tiny, top_k=5)


def test_lens_matches_independent_unembed(tiny, ctl):
    lens = ctl.prompt_lens(PROMPT)
    cap = capture(tiny, PROMPT, [f"resid_post:{i}" for i in range(tiny.n_layers)])
    for layer in range(tiny.n_layers):
        p = torch.softmax(tiny.unembed(cap[f"resid_post:{layer}"][0]).float(), -1)
        np.testing.assert_allclose(lens.top_probs[layer], p.max(-1).values.numpy(), rtol=1e-5)
        np.testing.assert_array_equal(lens.top_ids[layer], p.argmax(-1).numpy())
    # the last layer's lens at the last token is the model's own next-token distribution
    last = torch.softmax(tiny.last_logits(PROMPT)[0].float(), -1)
    assert lens.next_ids[0] == int(last.argmax())
    assert lens.top_ids[-1, -1] == int(last.argmax())
    np.testing.assert_allclose(lens.next_probs, last.topk(5).values.numpy(), rtol=1e-5)


def test_edited_lens_equals_full_recompute(tiny, ctl):
    n = len(tiny.encode(PROMPT))
    edits = [UnitScale(0, n - 3, 7, 0.0), UnitScale(1, n - 1, 11, 3.0)]
    lens = ctl.prompt_lens(PROMPT, edits)
    ivs = [zero_neurons(0, [7], positions=[n - 3]), scale_neurons(1, [11], 3.0, positions=[n - 1])]
    cap = capture(tiny, PROMPT, [f"resid_post:{i}" for i in range(tiny.n_layers)], logits=True,
                  interventions=ivs)
    for layer in range(tiny.n_layers):
        p = torch.softmax(tiny.unembed(cap[f"resid_post:{layer}"][0]).float(), -1)
        np.testing.assert_allclose(lens.top_probs[layer], p.max(-1).values.numpy(), rtol=1e-5)
    nxt = torch.softmax(cap.logits[0, -1].float(), -1)
    np.testing.assert_allclose(lens.next_probs, nxt[lens.next_ids].numpy(), rtol=1e-5)
    base = torch.softmax(tiny.last_logits(PROMPT)[0].float(), -1)
    np.testing.assert_allclose(lens.base_next_probs, base[lens.next_ids].numpy(), rtol=1e-5)
    # positions before the earliest edit are untouched
    unedited = ctl.prompt_lens(PROMPT)
    np.testing.assert_array_equal(lens.top_probs[:, : n - 3], unedited.top_probs[:, : n - 3])


def test_sub_updates_rank_and_promote(tiny, ctl):
    lens = ctl.prompt_lens(PROMPT)
    subs = ctl.sub_updates(lens, 1, -1)
    n = len(lens.str_tokens)
    assert subs.position == n - 1
    m = capture(tiny, PROMPT, ["mlp_post:1"])["mlp_post:1"][0, -1]
    w = ffn_weights(tiny, 1)
    score = m.abs() * w.values.norm(dim=-1)
    assert [u.neuron for u in subs.by_magnitude] == score.topk(5).indices.tolist()
    u = subs.by_magnitude[0]
    proj = tiny.unembed(torch.sign(m[u.neuron]) * w.values[u.neuron])
    assert u.promoted[0].token == value_tokens(tiny, 1, [u.neuron], k=1)[0].__getattribute__(
        "promoted" if m[u.neuron] > 0 else "suppressed")[0].token
    assert u.promoted[0].token == tiny.tokenizer.decode([int(proj.argmax())])
    assert u.suppressed[0].token == tiny.tokenizer.decode([int(proj.argmin())])
    # under an edit that zeroes it, the unit is still listed, with m = 0
    zed = ctl.prompt_lens(PROMPT, [UnitScale(1, n - 1, u.neuron, 0.0)])
    again = ctl.sub_updates(zed, 1, n - 1)
    assert again.by_magnitude[0].neuron == u.neuron and again.by_magnitude[0].coefficient == 0.0


def test_bad_input_is_one_clear_error(ctl):
    with pytest.raises(EmptyPromptError):
        ctl.prompt_lens("  ")
    with pytest.raises(NeuronOutOfRange, match="neuron"):
        ctl.prompt_lens(PROMPT, [UnitScale(0, 0, 10**6, 0.0)])
    with pytest.raises(PositionOutOfRange, match="pos=999"):
        ctl.prompt_lens(PROMPT, [UnitScale(0, 999, 1, 0.0)])


def test_control_change_recomputes_and_redraws(tiny, ctl):
    calls = []

    def recompute(prompt, edits=(), progress=None):
        calls.append(tuple(edits))
        return ctl.prompt_lens(prompt, edits)

    lens = ctl.prompt_lens(PROMPT)
    view = PromptExplorer(lens, recompute, ctl.sub_updates, run_async=False)
    assert view.subs is not None and len(view.sub_box.children) == 5
    bars0 = np.array(view.bars.data[1].y, dtype=float)
    heat0 = np.array(view.heat.data[0].z, dtype=float)
    neuron = view.subs.by_magnitude[0].neuron
    toggle = view.sub_box.children[0].children[1]
    toggle.value = "zero"                                     # the user clicks "zero"
    layer, pos = view.selected
    assert calls[-1] == (UnitScale(layer, pos, neuron, 0.0),)
    with intervene(tiny, zero_neurons(layer, [neuron], positions=[pos])):
        want = torch.softmax(tiny.last_logits(PROMPT)[0].float(), -1)
    got = np.array(view.bars.data[1].y, dtype=float)
    np.testing.assert_allclose(got, want[view.lens.next_ids].numpy(), rtol=2e-3, atol=1e-6)
    assert not np.allclose(got, bars0) or not np.array_equal(view.lens.next_ids, lens.next_ids)
    assert "n%d" % neuron in view.edits_label.value
    # clicking another cell lists that layer's sub-updates and moves the marker
    view.select(0, 2)
    assert view.subs.layer == 0 and view.subs.position == 2 and list(view.heat.data[1].x) == [2]
    view.reset()
    assert calls[-1] == ()
    np.testing.assert_allclose(np.array(view.heat.data[0].z, dtype=float), heat0, rtol=1e-3)


def test_threaded_job_and_error_display(ctl):
    view = PromptExplorer(ctl.prompt_lens(PROMPT), ctl.prompt_lens, ctl.sub_updates,
                          run_async=True)
    view.wait()
    view.set_factor(view.subs.by_magnitude[0].neuron, 3.0)
    view.wait()
    assert view.lens.edits and view.lens.edits[0].factor == 3.0
    assert view.progress.layout.visibility == "hidden"
    before = view.lens
    view.set_prompt("")                                   # bad input: error shown, state kept
    view.wait()
    assert "EmptyPromptError" in view.error.value and view.lens is before


def test_static_fallback(ctl):
    view = PromptExplorer(ctl.prompt_lens(PROMPT), ctl.prompt_lens, ctl.sub_updates,
                          run_async=False)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html = bundle["text/html"]
    assert html.count("Plotly.newPlot") == 2 and "<table" in html and "promotes" in html


def test_stale_job_is_dropped(ctl):
    """Two quick changes: the older job finishing last must not overwrite the newer state."""
    import threading

    gate = threading.Event()
    lens = ctl.prompt_lens(PROMPT)

    def slow_then(prompt, edits=(), progress=None):
        if edits and edits[0].factor == 0.0:
            gate.wait(30)                         # the first (older) job is held back
        return ctl.prompt_lens(prompt, edits)

    view = PromptExplorer(lens, slow_then, ctl.sub_updates, run_async=True)
    view.wait()
    n = view.subs.by_magnitude[0].neuron
    view.set_factor(n, 0.0)                       # older: blocked
    view.set_factor(n, 3.0)                       # newer: runs through
    for j in list(view._jobs)[-1:]:
        j.join(30)
    gate.set()
    view.wait()
    assert view.lens.edits and view.lens.edits[0].factor == 3.0
