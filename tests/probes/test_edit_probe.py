"""Edit probe: ROME edits from a case file are scored and undone exactly."""

from __future__ import annotations

import json

import pytest
import torch

from probes import SCHEMA_PATH, run_battery

pytest.importorskip("editing.rome")
jsonschema = pytest.importorskip("jsonschema")

SPEC = """
[battery]
name = "edit"
model = "{model}"
device = "cpu"
max_tokens = 1024
window = 64

[[probe]]
kind = "edit"
name = "rome"
layer = 1
cases_path = "{cases}"
n_cases = 1
stats_tokens = 512
steps = 4
prefixes = 1
"""


def test_edit_probe_scores_and_restores_weights(tmp_path, tiny):
    # objects that are one token for the tiny tokenizer
    case = {"prompt": "The capital of France is", "subject": "France", "target_new": "Mary",
            "ground_truth": "Paris", "rephrase_prompt": "France has the capital",
            "locality_prompt": "The quick brown", "locality_ground_truth": "fox"}
    cf = tmp_path / "cases.json"
    cf.write_text(json.dumps([case]))
    before = [p.detach().clone() for p in tiny.hf_model.parameters()]
    p = tmp_path / "edit.toml"
    p.write_text(SPEC.format(model="unused", cases=cf))
    res = run_battery(p, tmp_path / "out", session=tiny, progress=False)
    jsonschema.validate(res, json.loads(SCHEMA_PATH.read_text()))
    rec = res["probes"][0]
    assert rec["status"] == "ran", rec["error"]
    r = rec["result"]
    assert r["n_edited"] == 1 and r["layer"] == 1
    row = r["tables"]["cases"][0]
    # mechanics only here (a random tiny model); the scores are those of editing.evaluate
    assert r["edited"]["efficacy"] == 100.0 * (row["p_new_after"] > row["p_true_after"])
    for a, b in zip(before, tiny.hf_model.parameters()):
        assert torch.equal(a, b)  # undone exactly
