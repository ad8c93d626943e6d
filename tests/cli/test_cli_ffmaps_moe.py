"""`workbench ffmaps`, `workbench moe` and `workbench lens --lens` on the tiny model (session
injected): the JSON contracts against the library's results and identities, bad arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workbench.cli import main

PROMPT = "Paris is the capital of France and"


@pytest.fixture
def tiny_cli(tiny, monkeypatch):
    import widgets.commands.ffmaps as ffm
    import widgets.commands.lens as lens
    import widgets.commands.moe as moe

    for mod in (ffm, moe, lens):
        monkeypatch.setattr(mod, "load_session", lambda args: tiny)
    return tiny


def test_ffmaps_cli_matches_library(tiny_cli, tmp_path, capsys):
    from workbench.ffmaps import ffmaps

    out = tmp_path / "f"
    assert main(["ffmaps", "--prompt", PROMPT, "--steps", "16", "--out", str(out)]) == 0
    d = json.loads((out / "ffmaps.json").read_text())
    ref = ffmaps(tiny_cli, PROMPT, steps=16)
    assert {"meta", "prompt", "str_tokens", "steps", "rule", "layers", "pairs"} <= set(d)
    assert d["str_tokens"] == list(ref.str_tokens) and d["steps"] == 16
    n = len(d["str_tokens"])
    for row, lm in zip(d["layers"], ref.layers, strict=True):
        assert row["layer"] == lm.layer and row["scopes"] == list(lm.scopes)
        for f in ("ff_rho", "ff_change", "cancel_rho", "ff_retained"):
            assert row[f] == pytest.approx(getattr(lm, f), rel=1e-6, nan_ok=True)
        maps = np.array(row["maps"])
        assert maps.shape == (len(lm.scopes), n, n) and np.all(np.triu(maps, 1) == 0)   # causal
        assert max(row["errors"]) < 1e-3            # the parts sum to the model's vectors
    # each pair's shares are the row shares of the JSON maps before / after the FF block
    for p in d["pairs"]:
        row = d["layers"][[r["layer"] for r in d["layers"]].index(p["layer"])]
        S = np.array(row["maps"]) / np.array(row["maps"]).sum(-1, keepdims=True)
        f = row["ff_scope"]
        assert 1 <= p["j"] < p["i"]
        assert S[f - 1, p["i"], p["j"]] == pytest.approx(p["share_before"], rel=1e-2)   # maps: 5 decimals
        assert S[f, p["i"], p["j"]] == pytest.approx(p["share_after"], rel=1e-2)
    assert [p["gain"] for p in d["pairs"]] == sorted((p["gain"] for p in d["pairs"]), reverse=True)
    html = (out / "ffmaps.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "sliders" in html and "amplifies" in html
    assert f"json: {out / 'ffmaps.json'}" in capsys.readouterr().out


def test_moe_cli_curve_and_identity(tiny_cli, small_corpus_path, tmp_path):
    out, facts = tmp_path / "m", tmp_path / "facts.json"
    facts.write_text(json.dumps([{"prompt": "The capital of France is", "answer": "Paris"},
                                 {"prompt": "The Eiffel Tower is in", "answer": "Paris"},
                                 {"prompt": "Water is made of hydrogen and", "answer": "oxygen"}]))
    assert main(["moe", "--experts", "8", "--shares", "0.25,1.0", "--corpus", str(small_corpus_path),
                 "--train-tokens", "128", "--held-tokens", "64", "--window", "32", "--router-steps", "10",
                 "--timing-tokens", "32", "--methods", "similarity,mlp,oracle,random-partition",
                 "--facts", str(facts), "--out", str(out)]) == 0
    d = json.loads((out / "moe.json").read_text())
    assert {"meta", "config", "curve", "timing", "seconds"} <= set(d)
    c = d["curve"]
    assert c["shares"] == [0.25, 1.0] and c["ks"] == [2, 8] and c["n_experts"] == 8
    assert c["layers"] == [0, 1] and c["n_facts"] == 3
    assert set(c["perplexity"]) == set(c["accuracy"]) == {"similarity", "mlp", "oracle", "random-partition"}
    for name, ppl in c["perplexity"].items():
        assert ppl[-1] == c["base_perplexity"], name       # k = E is the unmodified model, exactly
        assert c["accuracy"][name][-1] == c["base_accuracy"]
        assert math.isfinite(ppl[0]) and ppl[0] > 1
    assert len(d["timing"]) == 2 and [t["k"] for t in d["timing"]] == [2, 8]
    for t in d["timing"]:
        assert t["max_abs_diff"] < 1e-4 and t["dense_ms"] > 0 and t["speedup"] == pytest.approx(
            t["dense_ms"] / t["sparse_ms"])
    html = (out / "moe.html").read_text()
    assert '"type":"log"' in html.replace(" ", "") and "Gated MLPs" in html
    # the registered renderer draws the same curve from the result object
    from widgets.html.render import export_html
    from workbench.moe_quality import QualityCurve

    qc = QualityCurve(**{k: ({m: tuple(v) for m, v in c[k].items()} if isinstance(c[k], dict)
                             else tuple(c[k]) if isinstance(c[k], list) else c[k]) for k in c})
    text = export_html([qc], tmp_path / "qc.html").read_text()
    assert "MoEfication quality curve (8 experts per FFN)" in text and "random-partition" in text


def test_lens_cli_tuned_identity_and_missing(tiny_cli, tmp_path, capsys):
    from workbench.lenses import init_tuned_lens

    missing = tmp_path / "none.safetensors"
    assert main(["lens", PROMPT, "--lens", "tuned", "--lens-path", str(missing),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "train_tuned_lens" in err and str(missing) in err and not (tmp_path / "x").exists()
    path = init_tuned_lens(tiny_cli).save(tmp_path / "tuned.safetensors")   # identity translators
    out = tmp_path / "l"
    assert main(["lens", PROMPT, "--lens", "tuned", "--lens-path", str(path), "--out", str(out)]) == 0
    d = json.loads((out / "lens.json").read_text())
    assert d["lens_kind"] == "tuned" and d["lens_path"] == str(path)
    for r in d["lens"]:          # an identity tuned lens reads exactly what the logit lens reads
        assert r["lens_prob"] == pytest.approx(r["resid_post_prob"], rel=1e-4, abs=1e-7)
        assert r["lens_rank"] == r["resid_post_rank"]
    assert d["lens_first_top1_layer"] == d["first_top1_layer"]


@pytest.mark.parametrize("argv, needle", [
    (["ffmaps", "x", "--steps", "0"], "--steps=0 must be > 0"),
    (["ffmaps", "x", "--layers", "99"], "--layers=99 is out of range"),
    (["ffmaps", "--prompt", "  "], "is empty"),
    (["ffmaps", "x", "--min-share", "1.5"], "--min-share=1.5 must be in [0, 1)"),
    (["moe", "--shares", "0,0.5"], "every share must be in (0, 1]"),
    (["moe", "--shares", "a,b"], "not a comma list"),
    (["moe", "--experts", "0"], "--experts=0 must be > 0"),
    (["moe", "--experts", "100000"], "--experts=100000 is out of range"),
    (["moe", "--methods", "similarity,magic"], "'magic' is unknown"),
    (["moe", "--held-tokens", "16"], "--held-tokens=16 is shorter than --window=128"),
    (["moe", "--facts", "nope.json"], "--facts='nope.json' does not exist"),
    (["moe", "--corpus", "nope_dir"], "--corpus='nope_dir' does not exist"),
    (["moe", "--layers", "40"], "--layers=40 is out of range"),
])
def test_bad_arguments_fail_before_loading(argv, needle, monkeypatch, capsys):
    import widgets.commands.ffmaps as ffm
    import widgets.commands.moe as moe

    def boom(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ffm, "load_session", boom)
    monkeypatch.setattr(moe, "load_session", boom)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_lens_kind_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:          # argparse's own choice check, before any load
        main(["lens", "x", "--lens", "psychic"])
    assert exc.value.code == 2
    assert "invalid choice: 'psychic'" in capsys.readouterr().err
