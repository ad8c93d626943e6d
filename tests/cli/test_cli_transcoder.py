"""`workbench sae train --transcoder` and `workbench graph --basis transcoder` on the tiny model
(session injected), and their argument checks before any model loads."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main


def _no_load(args):
    raise AssertionError("the model was loaded before the arguments were checked")


def test_transcoder_train_then_graph(tiny, small_corpus_path, tmp_path, monkeypatch, capsys):
    import widgets.commands.graph as gcmd
    import widgets.commands.sae_transcoder as tcmd

    monkeypatch.setattr(tcmd, "load_session", lambda args: tiny)
    monkeypatch.setattr(gcmd, "load_session", lambda args: tiny)
    # the graph command checks the saved transcoders against --model before loading: let the
    # injected tiny model answer to the default name
    monkeypatch.setattr(tiny, "name", "smollm2-135m")
    out = tmp_path / "tc"
    assert main(["sae", "train", "--transcoder", "--layer", "0,1", "--expansion", "2", "--k", "8",
                 "--corpus", str(small_corpus_path), "--tokens", "4096", "--epochs", "2", "--batch-size", "128",
                 "--eval-tokens", "256", "--ce-tokens", "128", "--window", "32", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert [t["config"]["layer"] for t in m["transcoders"]] == [0, 1]
    for t in m["transcoders"]:
        assert t["metrics"]["l0"] <= 8 and 0 <= t["metrics"]["fvu"] and t["metrics"]["loss_recovered"] is not None
        assert t["config"]["model"] == "smollm2-135m" and t["config"]["d_tc"] == 128
    assert (out / "layer_00" / "transcoder.safetensors").is_file() and f"layer 1: {out / 'layer_01'}" in printed
    g_out = tmp_path / "g"
    assert main(["graph", "Paris is the capital of", "--basis", "transcoder", "--transcoders", str(out),
                 "--max-nodes", "16", "--faithfulness", "3", "--out", str(g_out), "--no-progress"]) == 0
    d = json.loads((g_out / "graph.json").read_text())
    assert d["basis"] == "transcoder" and d["summary"]["exactness_max_rel_error"] < 1e-4
    assert d["settings"]["other_layers"] == "units" and d["summary"]["error_nodes"] == 2 * len(d["tokens"])
    assert "replacement score" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["sae", "train", "--transcoder", "--corpus", "data/corpus"], "--transcoder needs --layer"),
    (["sae", "train", "--transcoder", "--layer", "2,x", "--corpus", "data/corpus"], "must be layer numbers"),
    (["sae", "train", "--transcoder", "--layer", "30", "--corpus", "data/corpus"],
     "--layer=30 is out of range; smollm2-135m has 30 layers"),
    (["sae", "train", "--transcoder", "--layer", "3", "--site", "resid_post:3", "--corpus", "data/corpus"],
     "give --layer, not --site"),
    (["sae", "train", "--transcoder", "--layer", "3", "--k", "0", "--corpus", "data/corpus"], "--k=0 must be > 0"),
    (["sae", "train", "--transcoder", "--layer", "3", "--corpus", "/nonexistent"], "--corpus='/nonexistent' does not exist"),
    (["sae", "train", "--layer", "3", "--site", "resid_post:3", "--corpus", "data/corpus"], "go with --transcoder"),
    (["graph", "x", "--basis", "transcoder"], "--basis transcoder and --transcoders DIR go together"),
    (["graph", "x", "--basis", "sae"], "--basis sae and --saes DIR go together"),
    (["graph", "x", "--basis", "transcoder", "--transcoders", "/nonexistent"], "--transcoders='/nonexistent' does not exist"),
])
def test_transcoder_arguments_checked_before_load(argv, needle, monkeypatch, capsys):
    import widgets.commands.graph as gcmd
    import widgets.commands.sae as scmd
    import widgets.commands.sae_transcoder as tcmd

    for mod in (gcmd, scmd, tcmd):
        monkeypatch.setattr(mod, "load_session", _no_load)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_graph_refuses_transcoders_of_another_model_or_an_sae(tiny, tmp_path, monkeypatch, capsys):
    """Checked from the saved configs before the model loads; one error naming both."""
    import widgets.commands.graph as gcmd
    from workbench.saes import SAEConfig, make_sae, save_sae
    from workbench.saes.transcoder import Transcoder, TranscoderConfig, save_transcoder

    monkeypatch.setattr(gcmd, "load_session", _no_load)
    save_transcoder(Transcoder(TranscoderConfig(d_model=64, d_tc=128, k=8, layer=1, model="tiny-llama")),
                    tmp_path / "tc" / "layer_01")
    assert main(["graph", "x", "--basis", "transcoder", "--transcoders", str(tmp_path / "tc")]) == 2
    err = capsys.readouterr().err
    assert "(layer 1) was trained on model 'tiny-llama', not 'smollm2-135m'" in err
    save_sae(make_sae(SAEConfig("topk", 64, 128, site="resid_post:1", k=8)), tmp_path / "sae")
    assert main(["graph", "x", "--basis", "transcoder", "--transcoders", str(tmp_path / "sae")]) == 2
    assert "holds an SAE of site 'resid_post:1', not a transcoder" in capsys.readouterr().err
