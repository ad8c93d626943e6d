"""The graph view and its controller calls on the tiny model: pin, group, scale live."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from widgets import Controller, GraphView  # noqa: E402
from workbench import intervene, scale_neurons  # noqa: E402


def test_graph_view_pins_groups_and_scales(tiny):
    ctl = Controller(tiny)
    g = ctl.graph("Paris is the capital of", max_nodes=20)
    cards = ctl.graph_cards(g, limit=5)
    view = GraphView(g, cards, ctl.graph_intervene, run_async=False)
    units = [n.id for n in g.nodes if n.kind == "unit"][:2]
    for u in units:
        view.toggle(u)
    assert view.pinned == units and "u" in view.card.value
    view.group_name.value = "pair"
    view.group_btn.click()
    view.clear_btn.click()
    assert view.pinned == []
    view.groups.value = "pair"
    assert view.pinned == units
    view.ablate_btn.click()
    change = view.change
    assert change is not None and "kl" in view.result.value.lower()
    # the same ablation done by hand gives the same distribution
    nodes = [g.nodes[g.node_index(u)] for u in units]
    with intervene(tiny, *[scale_neurons(n.layer, [n.index], 0.0, positions=[n.pos]) for n in nodes]):
        p = torch.softmax(tiny.last_logits(g.prompt)[0].float(), -1)
    assert change.after[0].score == pytest.approx(float(p[change.after[0].id]), abs=1e-6)
    with pytest.raises(KeyError, match="not in the graph"):
        view.toggle("u99.99.99")
    html = "".join(x for k, x in view.static_parts() if k == "text")
    assert "KL" in html
