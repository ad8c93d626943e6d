"""Memory explorer on the tiny model: index -> record, search by token, controls redraw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("workbench.memories")

from widgets import Controller  # noqa: E402
from widgets.memory import MemoryExplorer  # noqa: E402
from workbench import capture, ffn_weights  # noqa: E402


def test_memory_explorer(tiny, small_corpus_path):
    ctl = Controller(tiny, corpus=small_corpus_path)
    index = ctl.memory_index(max_tokens=2048, k=4)
    rec = ctl.memory(index, 1, 3)
    # the top example's coefficient is the unit's m_i at its trigger token (independent capture)
    ex = rec.examples[0]
    text = ex.prefix + ex.trigger
    m = capture(tiny, text, ["mlp_post:1"])["mlp_post:1"][0, -1, 3]
    assert float(m) == pytest.approx(ex.coefficient, rel=0.05, abs=1e-3)
    # search: the best hit's value really has the largest unembedded logit for the token
    hits = ctl.search_memories(index, " the", k=3)
    tid = tiny.token_id(" the")
    best = max(((ly, n, float(tiny.unembed(ffn_weights(tiny, ly).values[n])[tid]))
                for ly in index.layers for n in range(tiny.d_mlp)), key=lambda t: t[2])
    assert hits.hits[0][:2] == best[:2]
    mx = MemoryExplorer(rec, lambda ly, n: ctl.memory(index, ly, n),
                        lambda t: ctl.search_memories(index, t), index.layers, tiny.d_mlp,
                        run_async=False)
    x0 = np.array(mx.bars.data[0].x, dtype=float)
    mx.search(" the")
    assert len(mx.hit_box.children) == 10
    mx.hit_box.children[0].click()                           # a person clicks the best hit
    assert (mx.record.layer, mx.record.neuron) == hits.hits[0][:2]
    assert not np.allclose(np.array(mx.bars.data[0].x, dtype=float), x0) or best[:2] == (1, 3)
    assert "<mark" in mx.examples.value and "<mark" in mx.static_html(include_plotlyjs=False)
    with torch.no_grad():
        assert mx.bars.data[0].y[-1] == repr(mx.record.promoted[0][0])
