"""Knowledge probes: the logit lens checked against Hugging Face hidden states, and the last
layer against the model's own prediction."""

from __future__ import annotations

import pytest
import torch

from probes.knowledge import fact_lens, knowledge_note
from probes.labels import load_facts


def hf_lens_p(session, prompt: str, answer_id: int) -> torch.Tensor:
    """Independent logit lens: HF hidden states -> the HF final norm -> lm_head."""
    hf = session.hf_model
    ids = torch.tensor([session.encode(prompt)])
    with torch.no_grad():
        hs = hf(ids, output_hidden_states=True).hidden_states  # embeddings, block 0 .. block L-1
        # HF applies the final norm to the last entry; the blocks before it are raw residuals
        p = [torch.softmax(hf.lm_head(hf.model.norm(h[0, -1])).float(), -1)[answer_id] for h in hs[1:-1]]
    return torch.stack(p)


def check(session, facts):
    res = fact_lens(session, facts, batch_size=3, progress=False)
    for f, fl in zip(facts, res.facts):
        a = session.tokenizer(" " + f["answer"], add_special_tokens=False)["input_ids"][0]
        ref = hf_lens_p(session, f["prompt"], a)
        assert torch.allclose(torch.tensor(fl.p_curve[:-1]), ref, atol=2e-4, rtol=1e-3)
        final = session.last_logits(f["prompt"])[0]
        assert fl.final_correct == (int(final.argmax()) == a)
        assert fl.p_curve[-1] == pytest.approx(float(final.softmax(-1)[a]), abs=1e-4)
        ranks = fl.rank_curve
        first = next((i for i, r in enumerate(ranks) if r == 0), None)
        assert fl.first_top1_layer == first
    assert res.accuracy == pytest.approx(sum(f.final_correct for f in res.facts) / len(facts))
    assert sum(res.first_top1_hist) + res.never_top1 == len(facts)
    return res


def test_lens_matches_hf_on_tiny(tiny):
    facts = [{"prompt": "The capital of France is", "answer": "Paris"},
             {"prompt": "Water boils at", "answer": "100"},
             {"prompt": "When Mary and John went to the store, John gave a drink to", "answer": "Mary"},
             {"prompt": "Alice plays the", "answer": "piano"}]
    check(tiny, facts)


@pytest.mark.real
def test_real_model_knows_capitals_and_the_answer_emerges_late(smollm):
    facts = load_facts()[:4]  # Eiffel Tower, capitals of France, Italy, Germany
    res = check(smollm, facts)
    assert res.accuracy >= 0.5  # SmolLM2-135M gets most of these capital prompts
    known = [f for f in res.facts if f.final_correct]
    assert any(f.prompt.startswith("The Eiffel") for f in known)
    # the answer is not readable at the embedding end of the stack; it emerges in later layers
    assert all(f.first_top1_layer is not None and f.first_top1_layer >= smollm.n_layers // 3 for f in known)
    assert res.mean_p_curve[-1] > res.mean_p_curve[0]
    note = knowledge_note(res, smollm.n_layers)
    assert f"{res.accuracy:.0%}" in note and f"of {smollm.n_layers}" in note
