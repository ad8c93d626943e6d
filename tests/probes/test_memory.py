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
