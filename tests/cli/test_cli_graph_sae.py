"""`workbench graph --basis sae --saes DIR` on the tiny model (session injected), and its checks
before the model loads."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.saes import SAEConfig, make_sae, save_sae


def _no_load(args):
    raise AssertionError("the model was loaded before the arguments were checked")


def _sae(site: str, model: str = "smollm2-135m", d_in: int = 64, arch: str = "topk"):
    return make_sae(SAEConfig(arch, d_in, 128, site=site, k=8, model=model))


def test_graph_cli_sae_basis(tiny, tmp_path, monkeypatch, capsys):
    import widgets.commands.graph as gcmd

    monkeypatch.setattr(gcmd, "load_session", lambda args: tiny)
    # the saved SAEs are checked against --model before loading: let tiny answer to the default
    monkeypatch.setattr(tiny, "name", "smollm2-135m")
    save_sae(_sae("resid_post:0"), tmp_path / "saes" / "l0" / "final")
    save_sae(_sae("resid_post:1", arch="relu"), tmp_path / "saes" / "l1")
    out = tmp_path / "g"
    assert main(["graph", "Paris is the capital of", "--basis", "sae", "--saes", str(tmp_path / "saes"),
                 "--max-nodes", "16", "--faithfulness", "3", "--out", str(out), "--no-progress"]) == 0
    d = json.loads((out / "graph.json").read_text())
    assert d["basis"] == "sae" and d["summary"]["exactness_max_rel_error"] < 1e-4
    assert d["settings"]["other_layers"] == "units" and d["summary"]["error_nodes"] == 2 * len(d["tokens"])
    printed = capsys.readouterr().out
    assert "sae basis:" in printed and "replacement score" in printed
    assert "resid_post" in (out / "graph.html").read_text()


@pytest.mark.parametrize("argv, needle", [
    (["graph", "x", "--basis", "sae"], "--basis sae and --saes DIR go together"),
    (["graph", "x", "--saes", "data"], "--basis sae and --saes DIR go together"),
    (["graph", "x", "--basis", "sae", "--saes", "/nonexistent"], "--saes='/nonexistent' does not exist"),
])
def test_sae_arguments_checked_before_load(argv, needle, monkeypatch, capsys):
    import widgets.commands.graph as gcmd

    monkeypatch.setattr(gcmd, "load_session", _no_load)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("saes, needle", [
    ({"a": _sae("resid_post:1", model="tiny-llama")}, "(site resid_post:1) was trained on model 'tiny-llama', not "
                                                      "'smollm2-135m'"),
    ({"a": _sae("mlp_out:3")}, "is an SAE at site 'mlp_out:3', which the sae basis does not support; supported "
                               "sites: resid_post:L"),
    ({"a": _sae("resid_post:30")}, "reads site resid_post:30; layer=30 is out of range; smollm2-135m has 30 layers"),
    ({"a": _sae("resid_post:2"), "b": _sae("resid_post:2")}, "two SAEs for site resid_post:2"),
])
def test_graph_refuses_saes_before_load(saes, needle, tmp_path, monkeypatch, capsys):
    """Checked from the saved configs before the model loads; one error each."""
    import widgets.commands.graph as gcmd

    monkeypatch.setattr(gcmd, "load_session", _no_load)
    for name, sae in saes.items():
        save_sae(sae, tmp_path / name)
    assert main(["graph", "x", "--basis", "sae", "--saes", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err


def test_graph_refuses_a_transcoder_folder_as_saes(tmp_path, monkeypatch, capsys):
    import widgets.commands.graph as gcmd
    from workbench.saes.transcoder import Transcoder, TranscoderConfig, save_transcoder

    monkeypatch.setattr(gcmd, "load_session", _no_load)
    save_transcoder(Transcoder(TranscoderConfig(d_model=64, d_tc=128, k=8, layer=1)), tmp_path / "layer_01")
    assert main(["graph", "x", "--basis", "sae", "--saes", str(tmp_path)]) == 2
    assert "holds transcoders, not SAEs; use basis 'transcoder'" in capsys.readouterr().err
