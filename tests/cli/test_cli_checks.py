"""Every command checks its arguments before the model loads: bad layers, missing paths and unknown
models fail at once, with one line naming the value; prompts are given the same way everywhere."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from workbench.cli import main
from workbench.errors import EmptyPromptError, UnknownModelError


@pytest.fixture
def no_load(monkeypatch):
    from workbench.session import Session

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Session, "load", classmethod(lambda cls, *a, **k: boom()))


@pytest.mark.parametrize("argv, needle", [
    (["lens", "Paris is", "--layer", "30"], "--layer=30 is out of range; smollm2-135m has 30 layers (0..29)"),
    (["lens", "Paris is", "--layer", "-1"], "--layer=-1 is out of range"),
    (["lens", "Paris is", "--model", "smollm2"], "model='smollm2' is not an embedded name"),
    (["lens", "Paris is", "--model", "someone/missing-model"], "not in the local Hugging Face cache"),
    (["lens", "  "], "is empty"),
    (["lens"], "no prompt given"),
    (["lens", "a", "--prompt", "b"], "two prompts given"),
    (["lens", "Paris is", "--k", "0"], "--k=0 must be > 0"),
    (["trace", "X is in", "--subject", "X", "--noise-corpus", "/nonexistent/c.txt"],
     "--noise-corpus='/nonexistent/c.txt' does not exist"),
    (["trace", "--facts", "/nonexistent/f.json"], "--facts='/nonexistent/f.json' does not exist"),
    (["memories", "--corpus", "/nonexistent", "--out", "o"], "--corpus='/nonexistent' does not exist"),
    (["memories", "--corpus", "data/corpus", "--out", "o", "--layers", "99"], "--layers=99 is out of range"),
    (["sae", "eval", "/nonexistent/sae", "--corpus", "data/corpus"], "SAE='/nonexistent/sae' does not exist"),
    (["lens", "Paris is", "--device", "gpu"], "--device='gpu' is not a device"),
    (["edit", "--method", "memit", "--null-energy", "0.1"], "--null-energy and --l2 are AlphaEdit's"),
    (["edit", "--method", "rome", "--lam", "10"], "--chunk, --lam and --z-cache are MEMIT's and AlphaEdit's"),
    (["edit", "--method", "rome", "--z-cache", "zc"], "--chunk, --lam and --z-cache are MEMIT's and AlphaEdit's"),
    (["edit", "--method", "memit", "--chunk", "0"], "--chunk=0 must be > 0"),
    (["edit", "--method", "memit", "--clamp", "0"], "--clamp=0.0 is out of range"),
    (["edit", "--method", "memit", "--clamp", "nan"], "--clamp=nan is out of range"),
    (["graph", "Paris is", "--faithfulness-factor", "1"], "--faithfulness-factor=1.0 must be in [0, 1)"),
])
def test_bad_arguments_fail_before_load(no_load, capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_unknown_model_is_fast_offline():
    """A fresh process: import, parse, fail; no network retries, no model load."""
    code = ("import sys, time; t = time.perf_counter(); from workbench.cli import main; "
            "rc = main(['lens', 'Paris is', '--model', 'smollm2']); "
            "print(rc, time.perf_counter() - t, 'torch' in sys.modules)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = run.stdout.split()[0]
    assert rc == "2" and "embedded models are 'smollm2-135m', 'gemma3-270m'" in run.stderr
    # CPU seconds, not wall: the limit holds on an idle machine whatever else shares this one
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 5.0, f"took {cpu:.1f} CPU s"


def test_prompt_forms_agree():
    import argparse

    from workbench.arguments import add_prompt_args, prompt_of

    p = argparse.ArgumentParser()
    add_prompt_args(p)
    assert prompt_of(p.parse_args(["The sky is"])) == prompt_of(p.parse_args(["--prompt", "The sky is"]))
    assert prompt_of(p.parse_args(["x", "--prompt", "x"])) == "x"
    with pytest.raises(EmptyPromptError, match="no prompt given"):
        prompt_of(p.parse_args([]))
    assert prompt_of(p.parse_args([]), required=False) is None


def test_model_facts_match_the_loaded_model(smollm):
    from workbench.arguments import model_facts

    f = model_facts("smollm2-135m")
    assert (f.n_layers, f.d_mlp) == (smollm.n_layers, smollm.d_mlp)
    with pytest.raises(UnknownModelError, match="not a .gguf file"):
        model_facts(__file__)


def test_target_note_names_both_tokens(smollm):
    from widgets.commands.lens import target_note

    note = target_note(smollm, "Paris")
    assert "'Paris'" in note and "' Paris'" in note
    assert target_note(smollm, " Paris") is None
