"""Battery specs: every mistake is reported, naming it, before any model is loaded."""

from __future__ import annotations

import pytest

from probes import SpecError, UnknownProbeKind, load_spec, parse_spec
from probes.spec import PROJECT_ROOT

GOOD = """
[battery]
name = "t"
model = "smollm2-135m"
max_tokens = 1024

[[probe]]
kind = "linear"
name = "num"
label = "next_is_number"
layers = [0, 1]

[[probe]]
kind = "knowledge"
max_facts = 5
"""


def write(tmp_path, text):
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


def test_good_spec_fills_defaults_and_resolves_paths(tmp_path, no_model_load):
    spec = load_spec(write(tmp_path, GOOD))
    assert [p.name for p in spec.probes] == ["num", "knowledge_1"]
    assert spec.probes[0].params["site"] == "resid_post"
    assert spec.probes[0].params["model"] == "logistic"
    assert spec.corpus == str(PROJECT_ROOT / "data" / "corpus" / "tiny_corpus.txt")
    again = load_spec(write(tmp_path, GOOD))
    assert spec.hash() == again.hash()
    assert spec.probe_key(spec.probes[0]) == again.probe_key(again.probes[0])
    changed = load_spec(write(tmp_path, GOOD.replace("layers = [0, 1]", "layers = [0, 2]")))
    assert changed.probe_key(changed.probes[0]) != spec.probe_key(spec.probes[0])
    assert changed.probe_key(changed.probes[1]) == spec.probe_key(spec.probes[1])
    assert parse_spec(spec.to_dict(), spec.source).to_dict() == spec.to_dict()


def test_default_battery_is_valid(no_model_load):
    spec = load_spec(PROJECT_ROOT / "probes" / "batteries" / "default.toml")
    assert spec.model == "smollm2-135m" and len(spec.probes) >= 5


@pytest.mark.parametrize("text, exc, match", [
    (GOOD.replace('kind = "knowledge"', 'kind = "telepathy"'), UnknownProbeKind,
     r"probe #1 .*unknown probe kind='telepathy'; known kinds: .*'linear'"),
    (GOOD.replace('label = "next_is_number"', ""), SpecError,
     r"probe #0 'num' \(kind 'linear'\) is missing field 'label'"),
    (GOOD.replace('model = "smollm2-135m"', ""), SpecError, r"missing field 'model' in \[battery\]"),
    (GOOD.replace('kind = "knowledge"', ""), SpecError, r"probe #1 .*missing field 'kind'"),
    (GOOD.replace("max_facts = 5", "max_fact = 5"), SpecError, r"unknown field 'max_fact'.*max_facts"),
    (GOOD.replace("max_facts = 5", 'max_facts = "5"'), SpecError, r"max_facts='5' has type str"),
    (GOOD.replace('label = "next_is_number"', 'label = "is_magic"'), SpecError,
     r"label='is_magic' is not one of .*next_is_number"),
    (GOOD.replace("layers = [0, 1]", 'layers = "some"'), SpecError, r"layers='some'"),
    (GOOD.replace("max_tokens = 1024", 'corpus = "nowhere/x.txt"'), SpecError,
     r"corpus='nowhere/x.txt' does not exist"),
    (GOOD.replace('name = "t"', 'name = "t"\ncolour = "red"'), SpecError, r"unknown field 'colour'"),
    (GOOD + '\n[extras]\nx = 1\n', SpecError, r"unknown table\(s\) \['extras'\]"),
    (GOOD.replace("max_facts = 5", 'name = "num"'), SpecError, r"name='num' is used twice"),
    ("[battery]\nname='t'\nmodel='m'\n", SpecError, r"no \[\[probe\]\]"),
    ("[battery\n", SpecError, r"not valid TOML"),
])
def test_bad_specs_fail_naming_the_problem_before_loading(tmp_path, no_model_load, text, exc, match):
    with pytest.raises(exc, match=match):
        load_spec(write(tmp_path, text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_cli_reports_spec_error_without_loading(tmp_path, no_model_load, capsys):
    from workbench.cli import main

    rc = main(["battery", "run", str(write(tmp_path, GOOD.replace('"knowledge"', '"nope"'))),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown probe kind='nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
