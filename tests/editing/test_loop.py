"""The edit-evaluation loop, sequence scoring, capability and blast radius on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from editing import (
    AlphaEditConfig,
    EditCase,
    EditError,
    MemitConfig,
    active_edits,
    auroc,
    case_target_ids,
    held_windows,
    perplexity,
    run_edits,
    score_cases,
)
from workbench.errors import WorkbenchError

FAST = dict(prefix_lengths=(3,), prefixes_per_length=1, steps=3, pin_prompt=False)
CASES = [
    EditCase(1, "The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome", "Paris",
             "Where is the Eiffel Tower? It is in", "The Louvre is located in the city of", "Paris"),
    EditCase(2, "Rome is the capital of", "Rome", "France", "Italy",
             "The city of Rome is the capital of", "Milan is a city in", "Italy"),
    EditCase(3, "Bob plays the", "Bob", "piano keys", "guitar", "What Bob plays is the",
             "Alice plays the", "violin"),
    EditCase(4, "The sun rises in the", "The sun", "west", "east", "Each day the sun rises in the",
             "The moon rises in the", "east"),
]


@pytest.fixture(scope="module")
def stats0(tiny, small_corpus_path, tmp_path_factory):
    from editing import key_stats
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=4000)
    return key_stats(tiny, 0, corpus, n_tokens=2000, directory=tmp_path_factory.mktemp("cov0"),
                     progress=False)


@pytest.fixture(scope="module")
def held(tiny, small_corpus_path):
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    return held_windows(tiny, corpus, n_tokens=128, window=32, skip=2000)


def test_score_cases_is_the_teacher_forced_sequence_probability(tiny):
    case = CASES[2]                                   # "piano keys": several tokens
    ids = case_target_ids(tiny, case)
    assert len(ids["new"]) > 1
    got = score_cases(tiny, [case], [ids])[0]
    # independent: the bridge's logits of prompt + target, mean log p of the target tokens
    p_ids = tiny.encode(case.prompt)
    seq = p_ids + list(ids["new"])
    logp = torch.log_softmax(tiny.logits(tiny.batch_from_ids([seq]))[0].float(), -1)
    want = math.exp(float(torch.stack([logp[len(p_ids) - 1 + j, t] for j, t in enumerate(ids["new"])]).mean()))
    assert got.p_new == pytest.approx(want, rel=1e-4)


def test_perplexity_matches_the_bridge(tiny, held):
    logits = tiny.logits(tiny.batch_from_ids(held.tolist())).float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), held[:, 1:].reshape(-1))
    assert perplexity(tiny, held) == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_memit_loop_fresh_state(tiny, stats0, held, param_bytes):
    before = param_bytes(tiny)
    rows = []
    run = run_edits(tiny, CASES, {0: stats0}, method="memit", batch_size=2,
                    config=MemitConfig(layers=(0,), lam=1.0, **{**FAST, "steps": 10}), held=held,
                    known=[("The sun rises in the", "east")], progress=False, on_row=rows.append)
    s = run.summary
    for k in ("efficacy", "paraphrase", "neighborhood", "fluency", "n", "perplexity_before",
              "perplexity_after", "first_batch_efficacy_at_end", "blast_auroc"):
        assert k in s
    assert s["n"] == 4 and s["n_batches"] == 2 and not s["sequential"]
    assert s["first_batch_efficacy_at_end"] is None
    assert s["perplexity_after"] != s["perplexity_before"]           # the edit changed the model
    assert len(run.rows) == len(rows) == 4 and all(r["reach"] > 0 for r in run.rows)
    for r in run.rows:           # the break score: reach over the unedited margin, for right prompts only
        u = r["unedited"]
        m = math.log(u["p_true_loc"]) - math.log(u["p_new_loc"])
        assert (r["break_score"] is None) == (m <= 0)
        if m > 0:
            assert r["break_score"] == pytest.approx(r["reach"] / m, rel=1e-9)
    assert "blast_auroc_reach" in s
    assert s["p_new"] > s["unedited"]["p_new"]                        # the batches moved p(new) up
    assert param_bytes(tiny) == before and active_edits(tiny) == []


def test_alphaedit_loop_sequential(tiny, stats0, param_bytes, small_corpus_path):
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=5000)
    before = param_bytes(tiny)
    run = run_edits(tiny, CASES, {0: stats0}, method="alphaedit", batch_size=2,
                    config=AlphaEditConfig(layers=(0,), **FAST), progress=False, blast_corpus=corpus)
    s = run.summary
    assert s["sequential"] and s["first_batch_efficacy_at_end"] is not None
    b = s["blast_radius"]                                  # the first batch's, before it was applied
    assert b["layers"] == [0] and len(b["prefixes"]) == 10 and len(b["prompts"]) == 2
    assert [p["reach"] for p in b["prefixes"]] == sorted((p["reach"] for p in b["prefixes"]), reverse=True)
    assert len(run.ledger) == 2 and all(r["at_edit"] is not None for r in run.rows)
    assert param_bytes(tiny) == before and active_edits(tiny) == []


def test_loop_bad_inputs(tiny, stats0, param_bytes):
    before = param_bytes(tiny)
    with pytest.raises(WorkbenchError, match="ROME edits one fact at a time"):
        run_edits(tiny, CASES, {0: stats0}, method="rome", batch_size=2)
    with pytest.raises(WorkbenchError, match="method='mend'"):
        run_edits(tiny, CASES, {0: stats0}, method="mend")
    with pytest.raises(WorkbenchError, match="no usable case"):
        run_edits(tiny, [], {0: stats0}, method="memit")
    assert param_bytes(tiny) == before


def test_break_score_ranks_alike_for_any_gain():
    """break iff g * reach > margin: ranking by reach / margin is the same for every gain g, and
    equals the ranking by the smallest gain that breaks each prompt (margin / reach), reversed."""
    from editing.blast import break_score

    g = torch.Generator().manual_seed(0)
    reach = (torch.rand(50, generator=g) * 10).tolist()
    pt = (torch.rand(50, generator=g) * 0.5 + 0.5).tolist()
    pn = (torch.rand(50, generator=g) * 0.5).tolist()
    s = [break_score(r, a, b) for r, a, b in zip(reach, pt, pn)]
    for gain in (0.01, 1.0, 100.0):
        sg = [break_score(gain * r, a, b) for r, a, b in zip(reach, pt, pn)]
        assert sorted(range(50), key=s.__getitem__) == sorted(range(50), key=sg.__getitem__)
    need = [(math.log(a) - math.log(b)) / r for r, a, b in zip(reach, pt, pn)]
    assert sorted(range(50), key=s.__getitem__) == sorted(range(50), key=need.__getitem__, reverse=True)
    assert break_score(1.0, 0.1, 0.2) is None and break_score(1.0, 0.2, 0.2) is None
    with pytest.raises(EditError, match="probabilities must be in"):
        break_score(1.0, float("nan"), 0.1)


def test_auroc_known_values():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5, 0.6], [True, True]) is None


def test_default_layers_from_the_trace(tiny, small_corpus_path):
    from editing import default_layers
    from workbench.corpus import Corpus

    corpus = Corpus.load(small_corpus_path, tiny.tokenizer, max_tokens=3000)
    facts = [("The Eiffel Tower is located in the city of", "The Eiffel Tower")]
    (peak,), curve = default_layers(tiny, "rome", corpus, facts=facts)
    assert len(curve) == tiny.n_layers and peak == max(range(len(curve)), key=curve.__getitem__)
    layers, _ = default_layers(tiny, "memit", corpus, facts=facts)
    assert layers == (0,)                           # the window stops below the last layer


def test_layers_from_curve_peak_and_window_below_the_last_layer():
    from editing.loop import layers_from_curve

    curve = [0.0, 0.1, 0.5, 0.2, 0.0, 0.9]          # the last layer peaks: MEMIT cannot edit it
    assert layers_from_curve(curve, "rome") == (5,)
    assert layers_from_curve(curve, "memit", n=2) == (2, 3)
    assert layers_from_curve(curve, "alphaedit", n=3) == (1, 2, 3)
    with pytest.raises(WorkbenchError, match="method='bogus'"):
        layers_from_curve(curve, "bogus")
