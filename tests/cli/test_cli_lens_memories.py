"""`workbench memories` and `workbench lens` end to end on the tiny model (session injected)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench import MemoryIndex, capture
from workbench.cli import main


@pytest.fixture
def tiny_cli(tiny, monkeypatch):
    import widgets.commands.lens as lens
    import widgets.commands.memories as mem

    monkeypatch.setattr(mem, "load_session", lambda args: tiny)
    monkeypatch.setattr(lens, "load_session", lambda args: tiny)
    return tiny


def test_memories_cli_json_index_html(tiny_cli, small_corpus_path, tmp_path):
    out = tmp_path / "mem"
    assert main(["memories", "--corpus", str(small_corpus_path), "--out", str(out), "--k", "5",
                 "--max-tokens", "1024", "--window", "32", "--composition-tokens", "128",
                 "--examples", "3"]) == 0
    data = json.loads((out / "memories.json").read_text())
    assert {"meta", "corpus", "harvest", "index", "agreement", "keys", "examples"} <= set(data)
    h = data["harvest"]
    assert h["layers"] == [0, 1] and h["k"] == 5 and h["n_tokens"] == 1024 and h["tokens_per_second"] > 0
    rows = data["agreement"]["rows"]
    assert [r["layer"] for r in rows] == [0, 1]
    for r in rows:
        for f in ("agreement", "random_baseline", "composition"):
            assert 0.0 <= r[f] <= 1.0
        assert r["n_keys"] == tiny_cli.d_mlp
    idx = MemoryIndex.load(out / "index")
    assert idx.n_tokens == 1024 and idx.k == 5
    for i, kr in enumerate(data["keys"]):   # JSON summary agrees with the saved index
        assert math.isclose(kr["top_coefficient"], float(idx.values[i, :, 0].max()), rel_tol=1e-6)
        assert math.isclose(kr["mean_frequency"], float(idx.frequency[i].mean()), rel_tol=1e-6)
    ex = data["examples"][0]
    assert ex["prefixes"][0]["coefficient"] == pytest.approx(float(idx.values[idx.row(ex["layer"]), ex["neuron"], 0]))
    assert (out / "memories.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("extra, message", [
    (["--layers", "7"], "layer=7 is out of range"),
    (["--k", "0"], "--k=0 must be >= 1"),
    (["--max-tokens", "-5"], "--max-tokens=-5"),
    (["--k", "2", "--prefixes", "3"], "--prefixes=3 exceeds --k=2"),
])
def test_memories_cli_bad_input(tiny_cli, small_corpus_path, tmp_path, capsys, extra, message):
    rc = main(["memories", "--corpus", str(small_corpus_path), "--out", str(tmp_path / "m"),
               "--max-tokens", "256", "--window", "32", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1


def test_memories_cli_empty_corpus(tiny_cli, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    assert main(["memories", "--corpus", str(empty), "--out", str(tmp_path / "m")]) == 2
    assert "holds no text" in capsys.readouterr().err


def test_lens_cli_identities(tiny_cli, tmp_path):
    s = tiny_cli
    prompt = "The capital of France is"
    out = tmp_path / "lens"
    assert main(["lens", prompt, "--out", str(out), "--target", " Paris", "--layer", "1",
                 "--k", str(s.d_mlp)]) == 0
    d = json.loads((out / "lens.json").read_text())
    p_final = s.last_logits(prompt)[0].float().softmax(-1)[s.token_id(" Paris")]
    assert d["final_prob"] == pytest.approx(float(p_final), rel=1e-4)
    # the last layer's resid_post read by the lens is the model's own output distribution
    assert d["lens"][-1]["resid_post_prob"] == pytest.approx(float(p_final), rel=1e-3)
    # the layer's FFN effect on the target's logit is the sum of its sub-updates' effects
    sub = d["sub_updates"][0]
    assert sub["layer"] == 1 and len(sub["by_target"]) == s.d_mlp
    total = sum(r["target_effect"] for r in sub["by_target"])
    assert total == pytest.approx(d["ffn_layers"][1]["ffn_target_effect"], rel=1e-3, abs=1e-4)
    # the listed coefficients are the captured m_i of the last position
    cap = capture(s, prompt, ["mlp_post:1"])
    m = cap["mlp_post:1"][0, -1]
    assert torch.allclose(torch.tensor([r["coefficient"] for r in sorted(sub["by_magnitude"],
                          key=lambda r: r["neuron"])]), m[: len(sub["by_magnitude"])], atol=1e-5)
    assert (out / "lens.html").read_text().startswith("<!DOCTYPE html>")


def test_lens_cli_bad_target_and_layer(tiny_cli, tmp_path, capsys):
    assert main(["lens", "The capital", "--out", str(tmp_path / "l"), "--target", "Paris is big"]) == 2
    assert "exactly one token" in capsys.readouterr().err
    assert main(["lens", "The capital", "--out", str(tmp_path / "l"), "--layer", "9"]) == 2
    assert "layer=9" in capsys.readouterr().err
    assert main(["lens", "  ", "--out", str(tmp_path / "l")]) == 2
