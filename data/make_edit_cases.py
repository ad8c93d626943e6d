"""Write data/labels/counterfact_smollm2.json: CounterFact-style edit cases the model knows.

Facts come from relation templates and subject/object lists written for this project (world
geography, landmarks, languages, currencies: common knowledge, no third-party data). A case is
kept only when the embedded default model (SmolLM2-135M-Instruct, greedy, fp32) already states
the true object after the prompt (every token of it, greedily) and also gives it a higher
probability than the new object after the paraphrase; its locality prompt is another fact of the
same relation that the model also gets right, whose object differs from the new one. The new
object is another object of the same relation (seeded choice). Cases with one-token objects
come first (what one-token editors need), then cases whose new or true object spans several
tokens (`new_tokens`, `true_tokens` give the counts). Each record also stores the model's
unedited p(true) and p(new) at the first object token.

Licence: written by the project (same licence as the project). Run: python data/make_edit_cases.py
"""

import json
import random
from pathlib import Path

import torch

RELATIONS = {
    "capital": ("The capital of {} is", "{}'s capital city is", {
        "France": "Paris", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
        "Japan": "Tokyo", "Egypt": "Cairo", "Russia": "Moscow", "Greece": "Athens",
        "England": "London", "China": "Beijing", "Portugal": "Lisbon", "Austria": "Vienna",
        "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
        "Hungary": "Budapest", "Poland": "Warsaw", "Canada": "Ottawa", "Kenya": "Nairobi",
        "Thailand": "Bangkok", "Peru": "Lima", "Cuba": "Havana", "Iran": "Tehran",
        "Iraq": "Baghdad", "Turkey": "Ankara", "Denmark": "Copenhagen", "Belgium": "Brussels",
        "the Netherlands": "Amsterdam", "Argentina": "Buenos Aires", "Malaysia": "Kuala Lumpur",
        "Australia": "Canberra", "India": "New Delhi", "South Korea": "Seoul",
        "Mexico": "Mexico City", "Chile": "Santiago", "Colombia": "Bogota", "Ukraine": "Kyiv"}),
    "landmark": ("{} is located in the city of", "Tourists who visit {} travel to the city of", {
        "The Eiffel Tower": "Paris", "The Colosseum": "Rome", "Big Ben": "London",
        "The Kremlin": "Moscow", "The Brandenburg Gate": "Berlin", "The Acropolis": "Athens",
        "The Statue of Liberty": "New York", "The Golden Gate Bridge": "San Francisco",
        "The Sagrada Familia": "Barcelona", "The Louvre": "Paris", "Buckingham Palace": "London",
        "The Forbidden City": "Beijing", "The Space Needle": "Seattle", "The Vatican": "Rome",
        "The Leaning Tower": "Pisa", "The Sydney Opera House": "Sydney", "Red Square": "Moscow",
        "The Parthenon": "Athens", "Times Square": "New York", "The Alhambra": "Granada"}),
    "language": ("The official language of {} is", "In {}, most people speak", {
        "France": "French", "Germany": "German", "Italy": "Italian", "Spain": "Spanish",
        "Japan": "Japanese", "China": "Chinese", "Russia": "Russian", "Portugal": "Portuguese",
        "Brazil": "Portuguese", "Mexico": "Spanish", "Greece": "Greek", "Poland": "Polish",
        "Sweden": "Swedish", "Turkey": "Turkish", "the Netherlands": "Dutch", "Finland": "Finnish",
        "Hungary": "Hungarian", "Israel": "Hebrew", "Iran": "Persian", "Korea": "Korean"}),
    "currency": ("The currency of {} is the", "In {}, people pay with the", {
        "Japan": "yen", "the United Kingdom": "pound", "India": "rupee", "Russia": "ruble",
        "China": "yuan", "Mexico": "peso", "the United States": "dollar", "Germany": "euro",
        "Switzerland": "franc", "South Korea": "won", "Brazil": "real", "Poland": "zloty"}),
}


def first_id(tok, text: str) -> int:
    return tok(" " + text, add_special_tokens=False)["input_ids"][0]


def n_tokens(tok, text: str) -> int:
    return len(tok(" " + text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def last_probs(s, prompts: list[str]) -> torch.Tensor:
    """[n d_vocab] next-token probabilities after each prompt (one batched forward)."""
    return s.last_logits(prompts).float().softmax(-1)


def knows_all(s, prompts: list[str], objs: list[str]) -> list[bool]:
    """For each pair: greedy continuation of the prompt reproduces every token of " " + obj."""
    want = [s.tokenizer(" " + o, add_special_tokens=False)["input_ids"] for o in objs]
    ok = [True] * len(prompts)
    texts = list(prompts)
    for step in range(max(len(w) for w in want)):
        idx = [i for i in range(len(prompts)) if ok[i] and step < len(want[i])]
        if not idx:
            break
        top = last_probs(s, [texts[i] for i in idx]).argmax(-1)
        for j, i in enumerate(idx):
            ok[i] = int(top[j]) == want[i][step]
            texts[i] += s.tokenizer.decode([want[i][step]])
    return ok


def main() -> None:
    from workbench.session import Session

    s = Session.load("smollm2-135m", device="cpu", dtype="float32")
    rng = random.Random(0)
    single, multi = [], []
    for rel, (tmpl, para, facts) in RELATIONS.items():
        subjects = list(facts)
        ok = knows_all(s, [tmpl.format(x) for x in subjects], [facts[x] for x in subjects])
        known = [x for x, k in zip(subjects, ok) if k]
        picks = {}
        for subj in known:
            obj = facts[subj]
            new = rng.choice(sorted({o for o in facts.values() if o != obj}))
            loc = [x for x in known if x != subj and facts[x] not in (new, obj)]
            if loc and first_id(s.tokenizer, new) != first_id(s.tokenizer, obj):
                picks[subj] = (new, rng.choice(loc))
        if not picks:
            continue
        subs = list(picks)
        pp = last_probs(s, [para.format(x) for x in subs])
        pr = last_probs(s, [tmpl.format(x) for x in subs])
        for j, subj in enumerate(subs):
            obj, (new, ls) = facts[subj], picks[subj]
            t_id, n_id = first_id(s.tokenizer, obj), first_id(s.tokenizer, new)
            if float(pp[j, t_id]) <= float(pp[j, n_id]):
                continue                      # the paraphrase must favour the truth too
            rec = {"prompt": tmpl.format(subj), "subject": subj, "target_new": new,
                   "ground_truth": obj, "rephrase_prompt": para.format(subj),
                   "locality_prompt": tmpl.format(ls), "locality_ground_truth": facts[ls],
                   "relation": rel, "new_tokens": n_tokens(s.tokenizer, new),
                   "true_tokens": n_tokens(s.tokenizer, obj),
                   "p_true_unedited": round(float(pr[j, t_id]), 4),
                   "p_new_unedited": round(float(pr[j, n_id]), 6)}
            one = rec["new_tokens"] == 1 and rec["true_tokens"] == 1 and n_tokens(s.tokenizer, facts[ls]) == 1
            (single if one else multi).append(rec)
    # interleave relations so that the first cases cover all of them
    rank: dict[str, int] = {}
    order = []
    for r in single:
        order.append((rank.get(r["relation"], 0), list(RELATIONS).index(r["relation"]), len(order), r))
        rank[r["relation"]] = rank.get(r["relation"], 0) + 1
    single = [x[-1] for x in sorted(order, key=lambda x: x[:3])]
    cases = single + multi
    for i, c in enumerate(cases):
        c["case_id"] = i
    out = Path(__file__).parent / "labels" / "counterfact_smollm2.json"
    out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(single)} one-token cases, {len(multi)} multi-token cases -> {out}")  # noqa: T201


if __name__ == "__main__":
    main()
