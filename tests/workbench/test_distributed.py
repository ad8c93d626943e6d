"""Sharded harvests, statistics and batteries on Ray (local mode, two CPU workers, tiny models).

One Ray instance and one pool of two worker actors serve the whole module (start-up is the
slow part). Each distributed result is compared with the single-process path on the same
tokens: top-k lists and counts must be identical, float64 sums equal up to addition order.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from editing.ray_stats import ray_key_stats
from workbench.corpus import Corpus
from workbench.distributed import (
    RayConfig,
    RayUnavailableError,
    ShardCorpus,
    WorkerModel,
    activation_sums,
    check_cover,
    corpus_windows,
    merge_sums,
    merge_topk,
    plan_shards,
    ray_activation_stats,
    require_ray,
    rows_per_batch,
    run_sharded,
)
from workbench.errors import WorkbenchError

WINDOW, TPB, MAX_TOKENS = 32, 256, 6000
CFG = RayConfig(num_cpus=2, workers=2, max_retries=2)


# ----------------------------------------------------------------------------- no Ray needed
def test_plan_shards_exact_disjoint_covering():
    for n, rows, k in [(1, 1, 1), (10, 3, 4), (100, 8, 3), (7, 8, 5), (64, 8, 8), (65, 8, 8)]:
        shards = plan_shards(n, rows, k)
        check_cover(shards, n)
        assert sum(len(s) for s in shards) == n
        assert all(s.lo % rows == 0 for s in shards)  # cut at batch boundaries
        assert len(shards) == min(k, -(-n // rows))
    with pytest.raises(WorkbenchError, match="n_windows=0"):
        plan_shards(0, 4, 2)


def test_shard_corpus_batches_partition_the_single_process_batches(tiny, small_corpus_path):
    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=MAX_TOKENS)
    full = list(corpus.batches(tiny, window=WINDOW, tokens_per_batch=TPB, progress=False))
    shards = plan_shards(corpus_windows(corpus, WINDOW, False), rows_per_batch(WINDOW, TPB), 3)
    parts = [b for s in shards for b in ShardCorpus.of(corpus, s).batches(
        tiny, window=WINDOW, tokens_per_batch=TPB, progress=False)]
    assert len(parts) == len(full)
    for a, b in zip(full, parts):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.starts, b.starts)


def test_merge_topk_equals_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 5, (3, 40), generator=g).float()  # many ties
    offs = torch.randperm(40, generator=g).repeat(3, 1)
    k = 6
    # brute force: sort by (value desc, offset asc)
    ref_v, ref_o = [], []
    for r in range(3):
        pairs = sorted(zip(vals[r].tolist(), offs[r].tolist()), key=lambda p: (-p[0], p[1]))[:k]
        ref_v.append([p[0] for p in pairs])
        ref_o.append([p[1] for p in pairs])
    cuts = [0, 7, 20, 21, 40]
    parts = []
    for lo, hi in zip(cuts, cuts[1:]):
        pv, po = merge_topk([(vals[:, lo:hi], offs[:, lo:hi])], k)  # per-shard top-k (padded)
        parts.append((pv, po))
    v, o = merge_topk(parts, k)
    assert v.tolist() == ref_v and o.tolist() == ref_o
    v2, o2 = merge_topk(parts[::-1], k)  # shard order does not matter
    assert torch.equal(v, v2) and torch.equal(o, o2)


def test_merge_sums_adds_by_kind_and_rejects_mixed_shards():
    parts = [{"x": torch.tensor([0.5, 1.0]), "c": torch.tensor([2, 3]), "n": 4, "s": 0.25},
             {"x": torch.tensor([1.5, -1.0]), "c": torch.tensor([1, 1]), "n": 6, "s": 0.5}]
    out = merge_sums(parts)
    assert out["x"].dtype == torch.float64 and out["x"].tolist() == [2.0, 0.0]
    assert out["c"].dtype == torch.int64 and out["c"].tolist() == [3, 4]
    assert out["n"] == 10 and type(out["n"]) is int
    assert out["s"] == 0.75 and type(out["s"]) is float
    with pytest.raises(WorkbenchError, match="'x'.*tensor"):
        merge_sums([parts[0], {**parts[1], "x": 1.0}])
    with pytest.raises(WorkbenchError, match="shapes"):
        merge_sums([parts[0], {**parts[1], "x": torch.zeros(3)}])


def test_without_ray_the_flag_names_the_extra(monkeypatch, tmp_path, small_corpus_path, capsys):
    from workbench.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'ffn-workbench\[ray\]'"):
        require_ray()
    spec = tmp_path / "mini.toml"
    spec.write_text(BATTERY.format(corpus=small_corpus_path), encoding="utf-8")
    assert main(["battery", "run", str(spec), "--out", str(tmp_path), "--ray"]) == 2
    assert "pip install 'ffn-workbench[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # failed before anything ran
    # memories --ray: the same error before any model is loaded (an unknown model name would
    # otherwise be the first error)
    assert main(["memories", "--model", "no-such-model", "--corpus", str(small_corpus_path),
                 "--out", str(tmp_path / "mem"), "--ray"]) == 2
    assert "pip install 'ffn-workbench[ray]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from workbench.distributed import release_workers

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test helpers travel by value
    started = not ray.is_initialized()
    if started:
        from workbench.distributed import init_ray

        init_ray(CFG)
    yield ray
    release_workers()
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tiny, small_corpus_path):
    return Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=MAX_TOKENS)


def test_key_stats_on_ray_equal_single_process(ray_local, tiny, corpus):
    from editing.covariance import key_stats

    ref = key_stats(tiny, 1, corpus, n_tokens=MAX_TOKENS, window=WINDOW, tokens_per_batch=TPB,
                    use_cache=False, progress=False)
    got = ray_key_stats(WorkerModel.of(tiny), 1, corpus, CFG, n_tokens=MAX_TOKENS,
                        window=WINDOW, tokens_per_batch=TPB)
    assert got.n_tokens == ref.n_tokens
    torch.testing.assert_close(got.moment, ref.moment, rtol=1e-6, atol=1e-9)


def test_activation_stats_with_sae_on_ray_equal_single_process(ray_local, tiny, corpus):
    from workbench.saes import SAEConfig, make_sae

    torch.manual_seed(0)
    sae = make_sae(SAEConfig("topk", tiny.d_model, 128, site="resid_post:0", k=8))
    kw = dict(site="resid_post:0", window=WINDOW, tokens_per_batch=TPB, max_tokens=MAX_TOKENS)
    ref = activation_sums(tiny, corpus, sae=sae, **kw)
    stats, got = ray_activation_stats(WorkerModel.of(tiny), corpus, cfg=CFG, sae=sae, **kw)
    assert got["n"] == ref["n"] == corpus_windows(corpus, WINDOW, False, MAX_TOKENS) * WINDOW
    assert torch.equal(got["fires"], ref["fires"])  # counts: exact
    for key in ("sum", "sum_sq", "sum_norm_sq", "code_sum"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(stats.mean, ref["sum"] / ref["n"])


class DieOnce:
    """Run `fn`, but on the first attempt of shard `index` kill the worker process mid-shard."""

    def __init__(self, fn, marker: str, index: int):
        self.fn, self.marker, self.index = fn, marker, index

    def __call__(self, session, corpus, **kw):
        out = self.fn(session, corpus, **kw)  # the shard's work is done, then the process dies
        if corpus.shard.index == self.index and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return out


def _brute_force_topk(session, corpus, layers, k):
    """Every coefficient of every prefix captured, then sorted by (value desc, offset asc)."""
    from workbench.capture import capture_tokens
    from workbench.distributed import order_topk
    from workbench.session import TokenBatch

    vals, offs = [], []
    for wb in corpus.batches(session, window=WINDOW, tokens_per_batch=TPB, progress=False):
        tb = TokenBatch(wb.tokens, torch.full((wb.tokens.shape[0],), wb.tokens.shape[1]))
        cap = capture_tokens(session, tb, [f"mlp_post:{x}" for x in layers])
        vals.append(torch.stack([cap[f"mlp_post:{x}"].reshape(-1, session.d_mlp) for x in layers]))
        offs.append(wb.offsets().reshape(-1))
    v = torch.cat(vals, 1).transpose(1, 2)  # [L U n]
    o = torch.cat(offs).expand_as(v)
    return (*order_topk(v, o, k), v)


def test_sharded_harvest_with_a_killed_worker_equals_single_process(ray_local, tiny, corpus,
                                                                   tmp_path):
    from workbench.distributed import harvest_shard, merge_harvests, ray_harvest
    from workbench.memories import harvest, index_from_merged

    layers, k = [0, 1], 5
    kw = dict(layers=layers, k=k, window=WINDOW, tokens_per_batch=TPB)
    index = harvest(tiny, corpus, progress=False, **kw)  # the single-process harvest
    single = merge_harvests([harvest_shard(tiny, corpus, **kw)])
    bv, bo, allv = _brute_force_topk(tiny, corpus, layers, k)
    assert torch.equal(single["values"], bv) and torch.equal(single["offsets"], bo)
    assert torch.equal(index.values, bv) and torch.equal(index.offsets, bo)
    torch.testing.assert_close(single["mean"], allv.double().mean(-1), rtol=1e-6, atol=1e-9)
    assert torch.equal(single["fires"], (allv > 0).sum(-1))

    model = WorkerModel.of(tiny)
    n = corpus_windows(corpus, WINDOW, False)
    shards = plan_shards(n, rows_per_batch(WINDOW, TPB), 4)
    marker = tmp_path / "killed"
    parts, timing = run_sharded(model, DieOnce(harvest_shard, str(marker), 1), corpus, CFG,
                                shards, kw, checkpoint=tmp_path / "ckpt")
    assert marker.exists()  # a worker really died mid-shard, and was replaced
    assert len(timing["workers"]) >= 2
    assert [p["n"] for p in parts] == [len(s) * WINDOW for s in shards]  # each token once
    merged = merge_harvests(parts)
    assert merged["n"] == single["n"] == n * WINDOW
    assert torch.equal(merged["values"], single["values"])  # prefix for prefix
    assert torch.equal(merged["offsets"], single["offsets"])
    assert torch.equal(merged["fires"], single["fires"])
    torch.testing.assert_close(merged["sum"], single["sum"], rtol=1e-12, atol=1e-9)
    sharded = index_from_merged(tiny, corpus, merged, WINDOW)  # what `memories --ray` saves
    for name in ("values", "offsets", "frequency", "mean", "context"):
        assert torch.equal(getattr(sharded, name), getattr(index, name)), name
    assert sharded.n_tokens == index.n_tokens and sharded.layers == index.layers
    # results were written as they finished; a rerun loads them and runs nothing
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == [f"{s.key}.safetensors" for s in shards]
    again, _ = run_sharded(model, DieOnce(harvest_shard, str(tmp_path / "never"), 0), corpus,
                           CFG, shards, kw, checkpoint=tmp_path / "ckpt")
    assert not (tmp_path / "never").exists()
    assert all(torch.equal(a["keys"], b["keys"]) for a, b in zip(parts, again))
    # the driver-level entry point gives the same harvest
    via, t = ray_harvest(model, corpus, CFG, **kw)
    assert torch.equal(via["keys"], single["keys"]) and t["merge_seconds"] >= 0


BATTERY = """
[battery]
name = "mini"
model = "tiny-llama"
corpus = "{corpus}"
max_tokens = 2000
window = 32
seed = 0

[[probe]]
kind = "linear"
name = "next_is_number"
label = "next_is_number"
layers = [0, 1]
max_examples = 600

[[probe]]
kind = "linear"
name = "next_is_capitalised"
label = "next_is_capitalised"
model = "ridge"
layers = [1]
max_examples = 600
"""


def _untimed(obj):
    """A result without its wall-clock fields (the only thing allowed to differ)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k != "seconds" and not k.endswith("_s")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _strip(results: dict) -> list:
    return [(p["name"], _untimed(p["result"])) for p in results["probes"]]


def test_battery_grid_on_ray_equals_single_process_and_rerun_skips(ray_local, tiny, tiny_gemma,
                                                                   small_corpus_path, tmp_path,
                                                                   capsys):
    import dataclasses
    import json

    from probes.ray_battery import ray_run_battery
    from probes.runner import run_battery
    from probes.spec import load_spec
    from workbench.cli import main

    path = tmp_path / "mini.toml"
    path.write_text(BATTERY.format(corpus=small_corpus_path), encoding="utf-8")
    spec = load_spec(path)
    ref = {m: run_battery(dataclasses.replace(spec, model=m), tmp_path / "ref" / m, session=s,
                          progress=False) for m, s in (("tiny-llama", tiny), ("tiny-gemma", tiny_gemma))}
    # the command line: workbench battery run SPEC --ray --models A,B (joins the running Ray)
    status = main(["battery", "run", str(path), "--out", str(tmp_path / "ray"), "--ray",
                   "--models", "tiny-llama,tiny-gemma", "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "ray: 4 probe tasks ran, 0 reused, 0 failed" in out
    for m in ("tiny-llama", "tiny-gemma"):
        got = json.loads((tmp_path / "ray" / m / "mini.json").read_text())
        assert _strip(got) == _strip(ref[m])
        assert (tmp_path / "ray" / m / "mini.html").exists()
    again = ray_run_battery(spec, tmp_path / "ray", CFG, models=["tiny-llama", "tiny-gemma"])
    assert again["ray"]["submitted"] == 0 and again["ray"]["skipped"] == 4
    assert all(again["results"][m]["counts"]["cached"] == 2 for m in ("tiny-llama", "tiny-gemma"))
