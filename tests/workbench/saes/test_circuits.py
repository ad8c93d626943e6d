"""Circuits from discrete SAE codes vs activation patching (tiny model), and task loading."""

from __future__ import annotations

import pytest
import torch

from workbench import capture
from workbench.saes.circuits import (
    CircuitConfig,
    find_circuit,
    head_code_scores,
    head_patching_importance,
    logit_diff,
)
from workbench.saes.tasks import CircuitTask, TaskUnavailable, load_task


def _task(tiny, corrupt_same=False):
    clean = ["When Mary and John went to the store, John gave a drink to",
             "When John and Mary went to the store, Mary gave a drink to"] * 3
    corrupt = list(clean)
    if not corrupt_same:  # a third name of the same token length replaces the repeated subject
        for i, (c, rep) in enumerate(zip(clean, [" John", " Mary"] * 3)):
            for other in (" Bob", " Alice", " Paris", " Rome", " Water", " fox"):
                x = c.replace(rep + " gave", other + " gave")
                if len(tiny.encode(x)) == len(tiny.encode(c)):
                    corrupt[i] = x
                    break
            assert corrupt[i] != c
    m, j = tiny.encode(" Mary")[0], tiny.encode(" John")[0]
    return CircuitTask("toy", tuple(clean), tuple(corrupt), ((m,), (j,)) * 3, ((j,), (m,)) * 3)


def test_patching_importance_against_direct_patch(tiny):
    task = _task(tiny)
    imp, ld_c, ld_x = head_patching_importance(tiny, task)
    assert imp.shape == (tiny.n_layers, tiny.n_heads)
    # independent: patch head (1, 2) through the generic `patch` intervention on attn_z
    from workbench import intervene, patch

    clean, corr = tiny.tokenize(list(task.clean)), tiny.tokenize(list(task.corrupt))
    z_clean = capture(tiny, clean, ["attn_z:1"])["attn_z:1"]
    z_corr = capture(tiny, corr, ["attn_z:1"])["attn_z:1"]
    src = z_clean.clone()
    src[:, :, 2] = z_corr[:, :, 2]
    with intervene(tiny, patch("attn_z:1", src)):
        ld = logit_diff(tiny.logits(clean), clean.last, task.correct, task.wrong).mean().item()
    assert imp[1, 2].item() == pytest.approx((ld_c - ld) / (ld_c - ld_x), rel=1e-4, abs=1e-6)


def test_code_scores_zero_when_negatives_equal_positives(tiny):
    s = head_code_scores(tiny, _task(tiny, corrupt_same=True), CircuitConfig(d_sae=8, steps=20))
    assert s.shape == (tiny.n_layers, tiny.n_heads) and (s == 0).all()


def test_find_circuit_summary(tiny):
    r = find_circuit(tiny, _task(tiny), CircuitConfig(d_sae=8, steps=30, n_true=3))
    assert 0 <= r.precision <= 1 and 0 <= r.recall <= 1
    assert len(r.true_heads) == 3 and len(r.predicted_heads) == 3
    top = r.importance.abs().flatten().topk(3).indices
    assert {(int(i) // tiny.n_heads, int(i) % tiny.n_heads) for i in top} == set(r.true_heads)
    d = r.to_dict()
    assert d["sae_seconds"] > 0 and d["patching_seconds"] > 0 and len(d["heads_ranked"]) == 8
    assert torch.isfinite(r.code_scores).all()


def test_tasks_from_shared_data(smollm, shared_data):
    data = shared_data / "circuits"
    ioi = load_task("ioi", smollm, data, n=8)
    assert len(ioi) == 8
    for c, x in zip(ioi.clean, ioi.corrupt):
        assert len(smollm.encode(c)) == len(smollm.encode(x)) and c != x
    doc = load_task("docstring", smollm, data, n=4)
    assert len(doc) == 4
    two_digit_single = all(len(smollm.tokenizer(f"{i:02d}", add_special_tokens=False)["input_ids"]) == 1
                           for i in range(100))
    gt = load_task("greaterthan", smollm, data, n=16)
    assert len(gt) == 16
    if not two_digit_single:  # SmolLM2 splits digits: the answer is the end year's tens digit
        digit = {smollm.tokenizer(str(i), add_special_tokens=False)["input_ids"][0]: i for i in range(10)}
        for c, right, wrong in zip(gt.clean, gt.correct, gt.wrong):
            tens = int(c.split("the year ")[1][2])
            assert sorted(digit[t] for t in right) == list(range(tens + 1, 10))
            assert sorted(digit[t] for t in wrong) == list(range(tens))
    # the real model does the task: the greater answers win on clean prompts, less so on corrupt
    clean, corrupt = smollm.tokenize(list(gt.clean)), smollm.tokenize(list(gt.corrupt))
    ld_clean = logit_diff(smollm.logits(clean), clean.last, gt.correct, gt.wrong)
    ld_corrupt = logit_diff(smollm.logits(corrupt), corrupt.last, gt.correct, gt.wrong)
    assert ld_clean.mean() > 0 and ld_clean.mean() > ld_corrupt.mean() + 1.0
    with pytest.raises(TaskUnavailable, match="does not exist"):
        load_task("ioi", smollm, data / "absent")
