"""Memory explorer on the tiny model: index -> card, search by token, controls redraw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("workbench.memories")

from widgets import Controller  # noqa: E402
from widgets.memory import MemoryExplorer  # noqa: E402
from workbench import capture, ffn_weights  # noqa: E402
from workbench.memory_cards import MemoryCard  # noqa: E402


def test_memory_explorer(tiny, small_corpus_path):
    ctl = Controller(tiny, corpus=small_corpus_path)
    index = ctl.memory_index(max_tokens=2048, k=4)
    rec = ctl.memory(index, 1, 3)
    # the top example's coefficient is the unit's m_i at its trigger token (independent capture)
    ex = rec.triggers[0]
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
        assert mx.bars.data[0].y[-1] == repr(mx.record.promoted[0].token)


def test_memory_explorer_reads_values_through_the_chosen_lens(tiny, small_corpus_path, tmp_path,
                                                               monkeypatch):
    """Picking the tuned lens redraws the value bars: unembed(v + v A_l) (linear part, no bias)."""
    import dataclasses

    from workbench.lenses import init_tuned_lens

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    base = init_tuned_lens(tiny)
    lens = dataclasses.replace(base, A=0.3 * torch.randn(base.A.shape, generator=g),
                               b=torch.randn(base.b.shape, generator=g))
    lens.save(session=tiny)
    ctl = Controller(tiny, corpus=small_corpus_path)
    index = ctl.memory_index(max_tokens=1024, k=4)
    mx = MemoryExplorer(ctl.memory(index, 1, 3), lambda ly, n, **kw: ctl.memory(index, ly, n, **kw),
                        lambda t: ctl.search_memories(index, t), index.layers, tiny.d_mlp,
                        run_async=False, lenses=ctl.lens_choices())
    assert mx.record.lens == "logit" and list(mx.lens_pick.options) == ["logit", "tuned"]
    mx.lens_pick.value = "tuned"                                   # the user picks the tuned lens
    assert mx.record.lens == "tuned" and "tuned lens" in mx.bars.layout.title.text
    v = ffn_weights(tiny, 1).values[3].float()
    want = tiny.unembed(v + v @ lens.A[1]).float()
    top = [tiny.tokenizer.decode([t]) for t in want.topk(len(mx.record.promoted)).indices.tolist()]
    assert [t.token for t in mx.record.promoted] == top


def test_explorer_and_graph_node_show_one_memory_card(tiny, small_corpus_path):
    """The explorer's card of a unit and a graph node's card of it: one type, one value reading;
    each adds only what its use knows (the index's triggers and statistics; m_i on the prompt)."""
    ctl = Controller(tiny, corpus=small_corpus_path)
    index = ctl.memory_index(max_tokens=1024, k=4)
    g = ctl.graph("The Eiffel Tower is in the city of", max_nodes=60)
    nid, gc = next(iter(ctl.graph_cards(g, limit=5).items()))
    ec = ctl.memory(index, gc.layer, gc.neuron, n_tokens=10)          # the graph cards' k
    assert type(ec) is type(gc) is MemoryCard
    assert (ec.layer, ec.neuron) == (gc.layer, gc.neuron)
    assert ec.value_norm == gc.value_norm
    assert ec.promoted == gc.promoted and ec.suppressed == gc.suppressed and ec.lens == gc.lens
    assert gc.coefficient == g.nodes[g.node_index(nid)].activation and gc.sub_update
    assert not gc.triggers and gc.frequency is None and gc.n_tokens is None
    assert ec.coefficient is None and not ec.sub_update
    assert ec.n_tokens == index.n_tokens and ec.frequency == float(index.frequency[index.row(ec.layer), ec.neuron])
    assert set(ec.to_dict()) == set(gc.to_dict())
