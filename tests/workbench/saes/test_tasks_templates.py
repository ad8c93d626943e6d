"""Circuit prompts from the project's own templates: aligned pairs the real model solves."""

from __future__ import annotations

import pytest

from workbench.saes.circuits import logit_diff
from workbench.saes.tasks import TaskUnavailable, load_task, template_rows


def test_template_rows_formats():
    ioi = template_rows("ioi", 5, seed=1)
    assert all(r["text"].endswith(" " + r["IO"]) and r["text"].count(" " + r["S"]) == 2 for r in ioi)
    gt = template_rows("greaterthan", 5)
    assert all(r["prompt"].endswith(f"the year {r['year'] // 100}") for r in gt)
    doc = template_rows("docstring", 5)
    for r in doc:
        assert r["clean_prompt"].endswith(":param") and r["correct_answers"][0] not in r["wrong_answers"]
        assert r["correct_answers"][0].strip() in r["clean_prompt"].split("\n")[0]
    assert template_rows("ioi", 3, seed=2) == template_rows("ioi", 3, seed=2)
    with pytest.raises(TaskUnavailable, match="unknown"):
        template_rows("sorting", 1)


@pytest.mark.parametrize("name", ["ioi", "greaterthan", "docstring"])
def test_templates_give_real_tasks(smollm, name):
    task = load_task(name, smollm, None, n=8)
    assert len(task) == 8
    for c, x in zip(task.clean, task.corrupt):
        assert len(smollm.encode(c)) == len(smollm.encode(x)) and c != x
    clean, corrupt = smollm.tokenize(list(task.clean)), smollm.tokenize(list(task.corrupt))
    ld_clean = logit_diff(smollm.logits(clean), clean.last, task.correct, task.wrong).mean()
    ld_corrupt = logit_diff(smollm.logits(corrupt), corrupt.last, task.correct, task.wrong).mean()
    # the model does the task on the clean prompts, and the corruption removes the signal
    assert ld_clean > 0.5 and ld_clean > ld_corrupt + 0.5, (float(ld_clean), float(ld_corrupt))
