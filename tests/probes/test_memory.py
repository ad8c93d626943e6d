"""Memory probe: per-layer tables from workbench.memories, sparsity checked against capture."""

from __future__ import annotations

import json

import pytest
import torch

from probes import SCHEMA_PATH, run_battery

pytest.importorskip("workbench.memories")
jsonschema = pytest.importorskip("jsonschema")

SPEC = """
[battery]
name = "mem"
model = "{model}"
device = "cpu"
max_tokens = 512
window = 64

[[probe]]
kind = "memory"
name = "memories"
k = 4
window = 64
composition_tokens = 128
"""


def test_memory_probe_tables_match_direct_capture(tmp_path, tiny_model_dir):
    from workbench import Corpus, Session
    from workbench.capture import capture_tokens
    from workbench.session import TokenBatch

    p = tmp_path / "mem.toml"
    p.write_text(SPEC.format(model=tiny_model_dir))
    res = run_battery(p, tmp_path / "out", progress=False)
    jsonschema.validate(res, json.loads(SCHEMA_PATH.read_text()))
    rec = res["probes"][0]
    assert rec["status"] == "ran", rec["error"]
    rows = rec["result"]["layers"]
    assert [r["layer"] for r in rows] == [0, 1]
    # independent: share of FFN coefficients > 0 over the same corpus windows
    s = Session.load(str(tiny_model_dir), device="cpu")
    corpus = Corpus.load(res["spec"]["battery"]["corpus"], s.tokenizer, max_tokens=512 + 7)
    pos, act = {0: 0.0, 1: 0.0}, {0: 0.0, 1: 0.0}
    n = 0
    for wb in corpus.batches(s, window=64, max_tokens=512, progress=False):
        b = TokenBatch(wb.tokens, torch.full((wb.tokens.shape[0],), wb.tokens.shape[1]))
        cap = capture_tokens(s, b, ["mlp_post:0", "mlp_post:1"])
        for layer in (0, 1):
            m = cap[f"mlp_post:{layer}"][:, int(wb.bos):]
            pos[layer] += float((m > 0).float().sum())
            big = m.abs() > 0.1 * m.abs().amax(-1, keepdim=True)
            act[layer] += float(big.float().mean(-1).sum())
        n += wb.tokens[:, int(wb.bos):].numel()
    for r in rows:
        assert r["positive_share"] == pytest.approx(pos[r["layer"]] / (n * s.d_mlp), abs=1e-4)
        assert r["active_share"] == pytest.approx(act[r["layer"]] / n, abs=1e-4)
        assert 0 <= r["agreement"] <= 1 and 0 <= r["random_baseline"] <= 1
    assert "memories" in (tmp_path / "out" / "mem.html").read_text()


def test_band_summary_and_note():
    from probes.memory import agreement_note, band_summary

    rows = [{"layer": i, "agreement": 0.02 + 0.01 * (i >= 6), "random_baseline": 0.01}
            for i in range(9)]
    b = band_summary(rows, 9)
    assert b["upper_layers"] == [6, 7, 8] and b["lower_layers"] == [0, 1, 2]
    assert b["upper_ratio"] == pytest.approx(3.0) and b["lower_ratio"] == pytest.approx(2.0)
    note = agreement_note(b)
    assert "6-8" in note and "3.0x" in note and "above chance" in note
    flat = band_summary([{**r, "agreement": 0.011} for r in rows], 9)
    assert "close to chance" in agreement_note(flat)
    assert band_summary(rows[:3], 9)["upper_ratio"] is None     # upper third not harvested


def test_memory_probe_reads_its_own_corpus(tmp_path, tiny_model_dir):
    from probes.spec import PROJECT_ROOT

    text = PROJECT_ROOT / "data" / "corpus" / "natural" / "python_reference.txt"
    p = tmp_path / "mem.toml"
    p.write_text(SPEC.format(model=tiny_model_dir).replace(
        "composition_tokens = 128", f'composition_tokens = 0\ncorpus_path = "{text}"\nmax_tokens = 256'))
    res = run_battery(p, tmp_path / "out", progress=False)
    rec = res["probes"][0]
    assert rec["status"] == "ran", rec["error"]
    assert rec["result"]["corpus"] == str(text) and 128 <= rec["result"]["n_tokens"] <= 256
    assert {"upper_ratio", "lower_ratio"} <= set(rec["result"]["summary"]) and rec["result"]["note"]
