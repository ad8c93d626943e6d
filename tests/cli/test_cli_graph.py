"""`workbench graph` end to end on the tiny model (session injected): graph.json's contract."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main


def test_graph_cli_writes_json_and_html(tiny, tmp_path, monkeypatch, capsys):
    import widgets.commands.graph as cmd

    monkeypatch.setattr(cmd, "load_session", lambda args: tiny)
    out = tmp_path / "g"
    assert main(["graph", "Paris is the capital of", "--max-nodes", "16", "--faithfulness", "4",
                 "--out", str(out), "--no-progress"]) == 0
    d = json.loads((out / "graph.json").read_text())
    assert {"nodes", "edges", "completeness", "exactness_max_rel_error", "faithfulness_spearman",
            "seconds"} <= set(d["summary"])
    assert d["summary"]["nodes"] == len(d["nodes"]) and d["summary"]["edges"] == len(d["edges"])
    assert d["summary"]["exactness_max_rel_error"] < 1e-4
    ids = {n["id"] for n in d["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in d["edges"])
    assert set(d["memory_cards"]) <= ids
    html = (out / "graph.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "cdn" not in html.lower().split("<script")[0]
    assert f"json: {out / 'graph.json'}" in capsys.readouterr().out
    assert d["summary"]["faithfulness_prediction"] == "graph"
    assert main(["graph", "Paris is the capital of", "--max-nodes", "16", "--faithfulness", "4",
                 "--prediction", "live", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "graph.json").read_text())["summary"]
    assert s["faithfulness_prediction"] == "live" and s["faithfulness_nodes"] == 4
    assert s["faithfulness_spearman"] == pytest.approx(s["faithfulness_spearman_live"], nan_ok=True)


@pytest.mark.parametrize("argv, needle", [
    (["graph", "x", "--basis", "sae"], "--basis sae and --saes DIR go together"),
    (["graph", "x", "--keep", "1.5"], "--keep=1.5 must be in (0, 1]"),
    (["graph", "x", "--edit-subject", "x"], "--edit-subject and --edit-target go together"),
])
def test_graph_cli_bad_arguments(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
