"""Running batteries on a tiny model: schema-valid JSON, standalone HTML, cache reuse, CLI."""

from __future__ import annotations

import json

import pytest

from probes import SCHEMA_PATH, load_spec, run_battery
from probes.registry import kinds

jsonschema = pytest.importorskip("jsonschema")

TINY = """
[battery]
name = "tiny"
model = "{model}"
device = "cpu"
max_tokens = 1024
window = 64
seed = 7

[[probe]]
kind = "linear"
name = "capitalised"
label = "next_is_capitalised"
balance = true

[[probe]]
kind = "linear"
name = "pos"
label = "pos"
model = "ridge"

[[probe]]
kind = "knowledge"
name = "facts"
max_facts = 6
"""

SAE = """
[[probe]]
kind = "sae"
name = "sae"
site = "resid_post:1"
expansion = 2
k = 8
train_tokens = 1024
eval_windows = 4
"""


def validate(results: dict) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(results, schema)


@pytest.fixture
def tiny_spec(tmp_path, tiny_model_dir):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(model=tiny_model_dir) + SAE)
    return p


def test_battery_runs_validates_and_reuses_cache(tiny_spec, tmp_path, monkeypatch):
    out = tmp_path / "out"
    res = run_battery(tiny_spec, out, progress=False)
    validate(res)
    assert res["counts"] == {"ran": 4, "cached": 0, "failed": 0}, [p["error"] for p in res["probes"]]
    assert res["model"]["n_layers"] == 2 and res["seed"] == 7
    assert set(res["timings"]["probes"]) == {"capitalised", "pos", "facts", "sae"}
    html = (out / "tiny.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html and "capitalised" in html
    assert "<script src=" not in html  # plotly inlined: opens offline
    lin = res["probes"][0]["result"]
    assert [r["layer"] for r in lin["layers"]] == [0, 1]
    assert lin["class_counts"][0] == lin["class_counts"][1]  # balanced
    facts = res["probes"][2]["result"]
    for f in facts["facts"]:  # the lens at the last layer is the model's own prediction
        assert (f["rank_curve"][-1] == 0) == f["final_correct"]
        assert f["p_curve"][-1] == pytest.approx(f["final_p"], abs=1e-4)

    # rerun: nothing runs (the model is not even loaded), results are identical
    from workbench.session import Session

    def fail(*a, **k):
        raise AssertionError("probe ran again")

    monkeypatch.setattr(Session, "load", classmethod(lambda cls, *a, **k: fail()))
    for k in kinds().values():
        monkeypatch.setattr(k, "run", fail)
    again = run_battery(tiny_spec, out, progress=False)
    validate(again)
    assert again["counts"] == {"ran": 0, "cached": 4, "failed": 0}
    assert [p["result"] for p in again["probes"]] == [p["result"] for p in res["probes"]]
    assert again["model"] == res["model"]
    monkeypatch.undo()

    # a changed probe reruns alone; --force reruns everything
    spec = load_spec(tiny_spec)
    tiny_spec.write_text(tiny_spec.read_text().replace("max_facts = 6", "max_facts = 4"))
    third = run_battery(tiny_spec, out, progress=False)
    assert [p["status"] for p in third["probes"]] == ["cached", "cached", "ran", "cached"]
    assert third["spec_hash"] != res["spec_hash"] == spec.hash()
    forced = run_battery(tiny_spec, out, force=True, progress=False, )
    assert forced["counts"]["ran"] == 4


def test_failed_probe_is_recorded_and_others_still_run(tmp_path, tiny_model_dir):
    p = tmp_path / "bad.toml"
    p.write_text(TINY.format(model=tiny_model_dir).replace('label = "pos"', 'label = "pos"\nlayers = [0, 9]'))
    res = run_battery(p, tmp_path / "out", progress=False)
    validate(res)
    status = {r["name"]: (r["status"], r["error"]) for r in res["probes"]}
    assert status["pos"][0] == "failed" and "layer=9 is out of range" in status["pos"][1]
    assert status["capitalised"][0] == status["facts"][0] == "ran"
    assert not list((tmp_path / "out" / "cache").glob("*.json")) == []  # finished ones cached


def test_cli_battery_run_writes_schema_valid_json_and_html(tmp_path, tiny_model_dir, capsys):
    from workbench.cli import main

    spec = tmp_path / "cli.toml"
    spec.write_text(TINY.format(model=tiny_model_dir).split("[[probe]]\nkind = \"linear\"\nname = \"pos\"")[0])
    out = tmp_path / "cli"
    assert main(["battery", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"html: {out / 'tiny.html'}" in text and "1 ran" in text
    validate(json.loads((out / "tiny.json").read_text()))
    assert (out / "tiny.html").stat().st_size > 100_000  # plotly.js inlined
    assert main(["battery", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "0 ran, 1 cached" in capsys.readouterr().out
    assert main(["battery", "kinds"]) == 0
    assert "linear" in capsys.readouterr().out


def test_workbench_demo_runs_a_battery_and_prints_the_report(tmp_path, tiny_model_dir, capsys):
    from probes.commands import DEFAULT_SPEC
    from workbench.cli import main

    assert DEFAULT_SPEC.is_file()
    spec = tmp_path / "demo.toml"
    spec.write_text(TINY.format(model=tiny_model_dir).split("[[probe]]\nkind = \"linear\"\nname = \"pos\"")[0])
    out = tmp_path / "demo"
    assert main(["demo", "--spec", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert f"report: {out / 'tiny.html'}" in capsys.readouterr().out
    validate(json.loads((out / "tiny.json").read_text()))
