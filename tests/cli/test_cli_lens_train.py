"""`workbench lens-train` on the tiny model: it writes a lens that load_lens reads back; bad flags
fail before any load; a lens saved for another model is one clear error naming both."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.lenses import LensModelMismatch, init_tuned_lens, load_lens


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_cli(tiny, cache, monkeypatch):
    import widgets.commands.lens as lens
    import widgets.commands.lens_train as lt

    monkeypatch.setattr(lt, "load_session", lambda args: tiny)
    monkeypatch.setattr(lens, "load_session", lambda args: tiny)
    return tiny


def test_train_tuned_writes_a_lens_load_lens_reads(tiny_cli, cache, small_corpus_path, tmp_path, capsys):
    s = tiny_cli
    out = tmp_path / "lt"
    assert main(["lens-train", "--lens", "tuned", "--corpus", str(small_corpus_path), "--tokens", "512",
                 "--held-tokens", "128", "--window", "32", "--steps", "8", "--batch", "16", "--lr", "0.5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    path = cache / "lenses" / "tiny-llama" / "tuned.safetensors"
    assert f"lens: {path}" in printed.out and "estimate" in printed.err
    back = load_lens(s, "tuned")                                   # the default path, this model
    assert back.meta["trained_steps"] == 8 and back.meta["corpus"].endswith("[:512]")
    assert float(back.A[0].abs().max()) > 1e-4                     # it trained
    d = json.loads((out / "lens_train.json").read_text())
    assert d["lens_kind"] == "tuned" and d["lens_path"] == str(path) and d["train_tokens"] == 512
    assert d["held_range"][0] == 512 and d["held_tokens"] > 0
    assert set(d["kl"]["kl"]) == {"logit", "tuned"} and d["compared"] == {"jacobian": "none saved"}
    assert d["kl"]["kl"]["tuned"][-1] == pytest.approx(0, abs=1e-4)  # last layer: the output itself
    assert d["below_logit_layers"] == [r["layer"] for r in d["rows"][:-1] if r["tuned"] < r["logit"]]
    assert d["estimate_seconds"] > 0 and d["train_seconds"] > 0
    assert (out / "lens_train.html").read_text().startswith("<!DOCTYPE html>")
    # the lens command now finds it at the default path
    assert main(["lens", "The quick brown fox", "--lens", "tuned", "--out", str(tmp_path / "l")]) == 0
    lens_json = json.loads((tmp_path / "l" / "lens.json").read_text())
    assert lens_json["lens_path"] == str(path)
    sub = lens_json["sub_updates"][0]
    assert "lens_promoted" in sub["by_magnitude"][0] and "lens_update_promoted" in sub


def test_fit_jacobian_and_compare_saved_tuned(tiny_cli, cache, small_corpus_path, tmp_path):
    s = tiny_cli
    init_tuned_lens(s).save(session=s)                               # a saved tuned lens is compared
    save = tmp_path / "j.safetensors"
    assert main(["lens-train", "--lens", "jacobian", "--corpus", str(small_corpus_path), "--tokens", "64",
                 "--held-tokens", "64", "--window", "32", "--dim-batch", "64", "--save", str(save),
                 "--out", str(tmp_path / "lj")]) == 0
    j = load_lens(s, "jacobian", save)
    assert j.lens.n_prompts == 2 and j.layers == (0,)
    d = json.loads((tmp_path / "lj" / "lens_train.json").read_text())
    assert set(d["kl"]["kl"]) == {"logit", "jacobian", "tuned"} and d["settings"]["n_prompts"] == 2
    for r in d["rows"]:                                              # an identity tuned lens is the logit lens
        assert r["tuned"] == pytest.approx(r["logit"], rel=1e-4, abs=1e-6)


def test_lens_for_another_model_is_one_clear_error(tiny_cli, tiny_gemma, tmp_path, capsys):
    other = init_tuned_lens(tiny_gemma).save(tmp_path / "gemma.safetensors")
    assert main(["lens", "The quick brown fox", "--lens", "tuned", "--lens-path", str(other),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny-gemma" in err and "tiny-llama" in err, err
    assert not (tmp_path / "x").exists()
    with pytest.raises(LensModelMismatch, match="model 'tiny-gemma'.*this session is 'tiny-llama'"):
        load_lens(tiny_cli, "tuned", other)
    from workbench.vocab import value_tokens

    with pytest.raises(LensModelMismatch, match="tiny-gemma"):      # a loaded reader is checked too
        value_tokens(tiny_cli, 0, [1], lens=load_lens(tiny_gemma, "tuned", other))


@pytest.mark.parametrize("argv, needle", [
    (["lens-train", "--lens", "psychic"], "--lens='psychic' is not a trainable lens; choose 'tuned', 'jacobian'"),
    (["lens-train", "--lens", "logit"], "the logit lens has nothing to train"),
    (["lens-train", "--steps", "0"], "--steps=0 must be > 0"),
    (["lens-train", "--steps", "-3"], "--steps=-3 must be > 0"),
    (["lens-train", "--lr", "0"], "--lr=0.0 must be > 0"),
    (["lens-train", "--tokens", "0"], "--tokens=0 must be > 0"),
    (["lens-train", "--tokens", "64", "--window", "128"], "--tokens=64 is shorter than one --window=128"),
    (["lens-train", "--lens", "jacobian", "--steps", "5"], "--steps applies to the tuned lens only"),
    (["lens-train", "--tokens", "512", "--held-start", "100"], "--held-start=100 is inside the training tokens"),
    (["lens-train", "--dim-batch", "4"], "--dim-batch applies to the jacobian lens only"),
    (["lens-train", "--lens", "jacobian", "--window", "16"], "--window=16 is too short for the Jacobian lens"),
    (["lens-train", "--corpus", "/nonexistent/c.txt"], "--corpus='/nonexistent/c.txt' does not exist"),
    (["lens-train", "--model", "smollm2"], "model='smollm2' is not an embedded name"),
    (["lens-train", "--device", "gpu"], "--device='gpu' is not a device"),
    (["sae", "features", "/tmp", "--corpus", "data/corpus", "--lens", "psychic"], "--lens='psychic' is not a lens"),
    (["memories", "--corpus", "data/corpus", "--out", "o", "--lens", "x"], "--lens='x' is not a lens"),
])
def test_bad_arguments_fail_before_load(argv, needle, monkeypatch, capsys):
    from workbench.session import Session

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Session, "load", classmethod(lambda cls, *a, **k: boom()))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


@pytest.mark.real
def test_train_on_the_embedded_model(tmp_path, monkeypatch):
    """A few steps on SmolLM2-135M: the file reads back for the model; the last layer is exact."""
    from workbench import Session

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    save, out = tmp_path / "t.safetensors", tmp_path / "lt"
    assert main(["lens-train", "--device", "cpu", "--steps", "3", "--tokens", "256", "--held-tokens", "128",
                 "--save", str(save), "--out", str(out)]) == 0
    d = json.loads((out / "lens_train.json").read_text())
    assert d["kl"]["layers"] == list(range(30)) and d["kl"]["kl"]["logit"][-1] == pytest.approx(0, abs=1e-5)
    assert d["compared"] == {"jacobian": "none saved"} and d["held_range"] == [256, 384]
    s = Session.load("smollm2-135m", device="cpu")
    assert load_lens(s, "tuned", save).meta["trained_steps"] == 3
