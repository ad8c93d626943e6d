"""The z* cache: a MEMIT batch cut inside its z* optimisation resumes from the chunks it wrote, and
the resumed update equals an uncached one; other weights or z* settings never read old targets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import editing.zstar as zstar
from editing import EditRequest, MemitConfig, ZCache, apply, compute_memit_update
from workbench.errors import WorkbenchError

REQS = [EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome"),
        EditRequest("Rome is the capital of", "Rome", "France"),
        EditRequest("Mary gave a drink to", "Mary", "John"),
        EditRequest("The sky is", "The sky", "green")]
CFG = MemitConfig(layers=(0,), lam=50.0, prefix_lengths=(3,), prefixes_per_length=1, steps=4,
                  pin_prompt=False, chunk=2)


class Cut(Exception):
    pass


def test_cut_run_resumes_from_the_cache_and_equals_a_fresh_one(tiny, stats0, tmp_path, monkeypatch, param_bytes):
    fresh = compute_memit_update(tiny, REQS, {0: stats0}, CFG)
    assert fresh.info["cached"] == 0
    cache = ZCache(tmp_path / "z")
    chunk_targets = zstar._chunk_targets
    calls = {"n": 0}

    def cut_on_second_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Cut("the call limit")
        return chunk_targets(*a, **k)

    monkeypatch.setattr(zstar, "_chunk_targets", cut_on_second_chunk)
    before = param_bytes(tiny)
    with pytest.raises(Cut):
        compute_memit_update(tiny, REQS, {0: stats0}, CFG, z_cache=cache)
    monkeypatch.setattr(zstar, "_chunk_targets", chunk_targets)
    assert param_bytes(tiny) == before
    assert len(list((tmp_path / "z").glob("zstar-*/*.safetensors"))) == 1     # the first chunk only

    resumed = compute_memit_update(tiny, REQS, {0: stats0}, CFG, z_cache=cache)
    assert resumed.info["cached"] == 2                                          # the first chunk's two
    torch.testing.assert_close(resumed.info["z"], fresh.info["z"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(resumed.deltas[0], fresh.deltas[0], rtol=1e-4, atol=1e-6)
    assert resumed.info["steps"] == fresh.info["steps"]

    again = compute_memit_update(tiny, REQS, {0: stats0}, dataclasses.replace(CFG, lam=500.0), z_cache=cache)
    assert again.info["cached"] == 4                                            # lam is not a z* setting
    assert torch.equal(again.info["z"], resumed.info["z"])
    assert not torch.allclose(again.deltas[0], resumed.deltas[0])               # the solve did change

    other = compute_memit_update(tiny, REQS[:2], {0: stats0}, dataclasses.replace(CFG, stop_nll=0.01),
                                 z_cache=cache)
    assert other.info["cached"] == 0                                            # another z* setting
    with apply(tiny, fresh):                                                    # other weights
        edited = compute_memit_update(tiny, REQS[:1], {0: stats0}, CFG, z_cache=cache)
    assert edited.info["cached"] == 0
    assert param_bytes(tiny) == before


def test_unreadable_cache_file_is_named(tiny, stats0, tmp_path):
    cache = ZCache(tmp_path / "z")
    compute_memit_update(tiny, REQS[:1], {0: stats0}, CFG, z_cache=cache)
    (f,) = (tmp_path / "z").glob("zstar-*/*.safetensors")
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(WorkbenchError, match=f"z\\* cache file '{f}' is unreadable"):
        compute_memit_update(tiny, REQS[:1], {0: stats0}, CFG, z_cache=cache)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WorkbenchError, match="is a file; give a directory"):
        ZCache(tmp_path / "afile")


def test_run_edits_reports_targets_read_from_the_cache(tiny, stats0, tmp_path, param_bytes):
    from test_loop import CASES, FAST  # same folder (rootdir-relative import mode)

    from editing import run_edits

    cfg = MemitConfig(layers=(0,), **FAST)
    before = param_bytes(tiny)
    plain = run_edits(tiny, CASES, {0: stats0}, method="memit", batch_size=2, config=cfg, progress=False)
    cache = ZCache(tmp_path / "z")
    first = run_edits(tiny, CASES, {0: stats0}, method="memit", batch_size=2, config=cfg, progress=False,
                      z_cache=cache)
    second = run_edits(tiny, CASES, {0: stats0}, method="memit", batch_size=2, config=cfg, progress=False,
                       z_cache=cache)
    assert plain.summary["z_cached"] is None and first.summary["z_cached"] == 0
    assert second.summary["z_cached"] == len(CASES)
    assert [r["edited"] for r in second.rows] == [r["edited"] for r in first.rows] == [r["edited"] for r in plain.rows]
    assert param_bytes(tiny) == before


def test_chunked_targets_equal_one_at_a_time(tiny, stats0):
    """Requests stopping at different steps leave the chunk's forward (`_chunk_targets` rebuilds it
    without their rows): each request's z* is still the one it gets alone."""
    # the tiny random model's target NLLs start near 6.0-6.15: a stop at 6.07 splits the chunk
    cfg = dataclasses.replace(CFG, steps=12, stop_nll=6.07, chunk=4)
    batch = compute_memit_update(tiny, REQS, {0: stats0}, cfg)
    steps = batch.info["steps"]
    assert min(steps) < 3 and max(steps) == 12                       # some stopped while others went on
    alone = [compute_memit_update(tiny, [r], {0: stats0}, dataclasses.replace(cfg, chunk=1)) for r in REQS]
    torch.testing.assert_close(batch.info["z"], torch.cat([a.info["z"] for a in alone]), rtol=1e-4, atol=1e-4)
    assert steps == [a.info["steps"][0] for a in alone]
