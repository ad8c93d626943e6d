"""`workbench sae train|eval|features` end to end on the tiny model (session injected)."""

from __future__ import annotations

import json

from workbench.cli import main


def test_sae_cli_train_eval_features(tiny, small_corpus_path, tmp_path, monkeypatch, capsys):
    import widgets.commands.sae as cmd

    monkeypatch.setattr(cmd, "load_session", lambda args: tiny)
    out = tmp_path / "sae"
    assert main(["sae", "train", "--site", "resid_post:1", "--expansion", "4", "--k", "8",
                 "--corpus", str(small_corpus_path), "--tokens", "2048", "--batch-size", "256",
                 "--eval-tokens", "256", "--window", "32", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["reconstruction"]["l0"] <= 8 and 0 <= m["reconstruction"]["fvu"]
    assert set(m["splice"]) >= {"ce_clean", "ce_sae", "ce_zero", "loss_recovered"}
    assert (out / "dashboard.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["sae", "eval", str(out / "final"), "--corpus", str(small_corpus_path),
                 "--tokens", "256", "--window", "32"]) == 0
    e = json.loads((out / "final" / "eval.json").read_text())
    # same seed and window: eval sees the training run's held-out windows, same numbers
    assert abs(e["reconstruction"]["fvu"] - m["reconstruction"]["fvu"]) < 1e-4
    assert main(["sae", "features", str(out / "final"), "--corpus", str(small_corpus_path),
                 "--features", "0,1", "--tokens", "1024"]) == 0
    f = json.loads((out / "final" / "features" / "features.json").read_text())
    assert [r["feature"] for r in f["features"]] == [0, 1]
    assert main(["sae", "eval", str(tmp_path / "missing"), "--corpus", str(small_corpus_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_circuits_cli_skips_or_runs(tiny, tmp_path, monkeypatch):
    import widgets.commands.circuits as cmd

    monkeypatch.setattr(cmd, "load_session", lambda args: tiny)
    assert main(["circuits", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "c")]) == 0
    data = json.loads((tmp_path / "c" / "circuits.json").read_text())
    assert set(data["tasks"]) == {"ioi", "greaterthan", "docstring"}
    assert all("does not exist" in t["skipped"] for t in data["tasks"].values())


def test_circuits_cli_scores_attribution_patching(tiny, tmp_path, monkeypatch):
    """With a prompt file in the ACDC format (names that are one token for the tiny tokenizer),
    the command ranks heads by attribution patching, live and frozen, against the same patching
    ground truth."""
    import widgets.commands.circuits as cmd
    from workbench.saes.tasks import FILES

    rows = [{"text": f"When {a} and {b} went to the city, {b} gave it to {a}", "IO": a, "S": b}
            for a, b in (("Mary", "John"), ("John", "Mary"), ("Paris", "Mary"), ("Mary", "Paris"))]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / FILES["ioi"]).write_text(json.dumps(rows))
    monkeypatch.setattr(cmd, "load_session", lambda args: tiny)
    assert main(["circuits", "--task", "ioi", "--data", str(tmp_path / "data"), "--prompts", "3", "--steps", "5",
                 "--n-true", "3", "--out", str(tmp_path / "c")]) == 0
    t = json.loads((tmp_path / "c" / "circuits.json").read_text())["tasks"]["ioi"]
    ap = t["attribution_patching"]
    assert ap["n_pairs"] == t["n_prompts"] and ap["seconds"] > 0
    for w in ("live", "frozen"):
        assert 0.0 <= ap[w]["precision"] <= 1.0 and -1.0 <= ap[w]["spearman"] <= 1.0
        assert len(ap[w]["predicted_heads"]) == 3
