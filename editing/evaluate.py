"""Edit evaluation on CounterFact-format records: efficacy, paraphrase, neighbourhood, fluency.

For a case (prompt about a subject, true object o, new object o*):

    efficacy      1[p(o* | prompt)   > p(o | prompt)]
    paraphrase    1[p(o* | rephrase) > p(o | rephrase)]
    neighbourhood 1[p(o_loc | locality prompt) > p(o* | locality prompt)]   (unaffected)
    fluency       ROME's generation entropy: sum_n w_n H_n / |n| over n = 2, 3 with
                  w = (2/3, 4/3), H_n the entropy (bits) of the n-gram frequencies of a
                  generated text (prompt + top-5 sampled continuation)

Shares over cases are reported in percent, with the mean probability gaps. Objects may be any
number of tokens (with the leading space they have after the prompt): p(o | prompt) is then the
per-token geometric mean of the teacher-forced sequence probability,

    p(o | prompt) = exp( (1/|o|) sum_j log p(o_j | prompt, o_<j) )

the comparison ROME and MEMIT make on CounterFact (mean token NLL); for one token it is the
probability itself. `case_target_ids` gives the token sequences (TokenError when the tokenizer
cannot produce an object); `case_token_ids` keeps the one-token ids for callers that need them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from workbench.errors import CorpusError
from workbench.session import Session

from ._prompts import target_id, target_ids

__all__ = ["EditCase", "KnownFact", "CaseScores", "load_counterfact", "load_known", "load_zsre",
           "case_token_ids", "case_target_ids", "usable_cases", "score_case", "score_cases",
           "sequence_logprobs", "generation_entropy", "generate_texts", "summarize"]


@dataclass(frozen=True)
class EditCase:
    """One CounterFact record (flat format)."""

    case_id: int
    prompt: str
    subject: str
    target_new: str
    ground_truth: str
    rephrase_prompt: str
    locality_prompt: str
    locality_ground_truth: str


@dataclass(frozen=True)
class KnownFact:
    """One record of ROME's known_1000.json (for causal tracing)."""

    known_id: int
    subject: str
    prompt: str
    attribute: str
    relation_id: str


def _read(path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"cases file={str(path)!r} does not exist")
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise CorpusError(f"{str(path)!r} holds a {type(data).__name__}; expected a list of records")
    return data


def load_counterfact(path, n: int | None = None) -> list[EditCase]:
    """Records of the flat CounterFact format (subject, prompt, target_new, ground_truth, ...)."""
    keys = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
            "locality_prompt", "locality_ground_truth")
    out = []
    for i, d in enumerate(_read(path)):
        miss = [k for k in keys if k not in d]
        if miss:
            raise CorpusError(f"record {i} of {str(path)!r} lacks {miss}; a CounterFact record "
                              f"needs {list(keys)}")
        out.append(EditCase(int(d.get("case_id", i)), *(str(d[k]) for k in keys)))
        if n is not None and len(out) >= n:
            break
    return out


def load_known(path, n: int | None = None) -> list[KnownFact]:
    """ROME's known facts: subject, prompt, attribute, relation_id."""
    out = []
    for i, d in enumerate(_read(path)):
        if "subject" not in d or "prompt" not in d:
            raise CorpusError(f"record {i} of {str(path)!r} needs 'subject' and 'prompt'")
        out.append(KnownFact(int(d.get("known_id", i)), d["subject"], d["prompt"],
                             str(d.get("attribute", "")), str(d.get("relation_id", ""))))
        if n is not None and len(out) >= n:
            break
    return out


def load_zsre(path, n: int | None = None) -> list[EditCase]:
    """zsRE question records (src, alt, answers, rephrase, loc, loc_ans) as `EditCase`s.

    prompt = src (the question), target_new = alt, ground_truth = answers[0], locality = the
    NQ question ``loc`` with its answer ``loc_ans``.
    """
    keys = ("subject", "src", "alt", "answers", "rephrase", "loc", "loc_ans")
    out = []
    for i, d in enumerate(_read(path)):
        miss = [k for k in keys if k not in d]
        if miss:
            raise CorpusError(f"record {i} of {str(path)!r} lacks {miss}; a zsRE record needs {list(keys)}")
        answers = d["answers"] if isinstance(d["answers"], list) else [d["answers"]]
        if not answers:
            raise CorpusError(f"record {i} of {str(path)!r} has no answer")
        out.append(EditCase(int(d.get("case_id", i)), str(d["src"]), str(d["subject"]), str(d["alt"]),
                            str(answers[0]), str(d["rephrase"]), str(d["loc"]), str(d["loc_ans"])))
        if n is not None and len(out) >= n:
            break
    return out


def case_target_ids(session: Session, case: EditCase) -> dict[str, tuple[int, ...]]:
    """Token sequences of the objects after each prompt (any length); TokenError when the
    tokenizer cannot produce one."""
    return {
        "new": target_ids(session, case.prompt, case.target_new),
        "true": target_ids(session, case.prompt, case.ground_truth),
        "new_rephrase": target_ids(session, case.rephrase_prompt, case.target_new),
        "true_rephrase": target_ids(session, case.rephrase_prompt, case.ground_truth),
        "new_loc": target_ids(session, case.locality_prompt, case.target_new),
        "true_loc": target_ids(session, case.locality_prompt, case.locality_ground_truth),
    }


def usable_cases(session: Session, cases: list[EditCase]) -> tuple[list[EditCase], int]:
    """(cases whose objects the tokenizer produces and whose new and true objects differ, skipped)."""
    from workbench.errors import TokenError

    out, skipped = [], 0
    for c in cases:
        try:
            ids = case_target_ids(session, c)
        except TokenError:
            skipped += 1
            continue
        if ids["new"] == ids["true"] or not c.subject.strip() or c.subject not in c.prompt:
            skipped += 1
            continue
        out.append(c)
    return out, skipped


@torch.no_grad()
def sequence_logprobs(session: Session, pairs: list[tuple[str, tuple[int, ...]]], batch_size: int = 64
                      ) -> list[float]:
    """Mean log p of each target sequence after its prompt (teacher forced), in the current state.

    Forwards of `batch_size` pairs (in order of length, so rows of a batch pad little) of the
    session's pure HF view on right-padded rows prompt + target[:-1] (causal attention needs no
    mask for right padding); the unembedding runs at the target positions only and the mean is
    taken on the device (one float per pair comes back, not a vocabulary per position).
    """
    from ._hf import logits_at

    dev = session.device
    enc: dict[str, list[int]] = {}

    def encode(prompt: str) -> list[int]:           # prompts repeat (two objects per prompt)
        if prompt not in enc:
            enc[prompt] = session.encode(prompt)
        return enc[prompt]

    rows = [(encode(p), list(t)) for p, t in pairs]
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0]) + len(rows[k][1]))
    out = [0.0] * len(rows)
    for i in range(0, len(order), batch_size):
        part = order[i : i + batch_size]
        width = max(len(rows[k][0]) + len(rows[k][1]) - 1 for k in part)
        tokens = torch.full((len(part), width), session.pad_id, dtype=torch.long)
        r_idx: list[int] = []
        c_idx: list[int] = []
        t_idx: list[int] = []
        for j, k in enumerate(part):
            a, b = rows[k]
            seq = (a + b)[:-1]
            tokens[j, : len(seq)] = torch.tensor(seq)
            r_idx += [j] * len(b)
            c_idx += range(len(a) - 1, len(a) - 1 + len(b))
            t_idx += b
        r = torch.tensor(r_idx, device=dev)
        logp = torch.log_softmax(logits_at(session, tokens.to(dev), r, torch.tensor(c_idx, device=dev)), -1)
        tok = logp[torch.arange(len(t_idx), device=dev), torch.tensor(t_idx, device=dev)]
        total = torch.zeros(len(part), device=dev, dtype=tok.dtype).index_add_(0, r, tok)
        for k, v in zip(part, total.tolist()):
            out[k] = v / len(rows[k][1])
    return out


def score_cases(session: Session, cases: list[EditCase], ids: list[dict] | None = None,
                batch_size: int = 64) -> list[CaseScores]:
    """`CaseScores` of many cases (any target length) in batched forwards, in the current state."""
    ids = ids or [case_target_ids(session, c) for c in cases]
    pairs = []
    for c, d in zip(cases, ids):
        d = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in d.items()}
        pairs += [(c.prompt, d["new"]), (c.prompt, d["true"]), (c.rephrase_prompt, d["new_rephrase"]),
                  (c.rephrase_prompt, d["true_rephrase"]), (c.locality_prompt, d["new_loc"]),
                  (c.locality_prompt, d["true_loc"])]
    lp = sequence_logprobs(session, pairs, batch_size)
    p = [math.exp(v) for v in lp]
    return [CaseScores(c.case_id, *p[6 * i : 6 * i + 6]) for i, c in enumerate(cases)]


def case_token_ids(session: Session, case: EditCase) -> dict[str, int]:
    """Token ids of the objects after each prompt; TokenError when one is not one token."""
    return {
        "new": target_id(session, case.prompt, case.target_new),
        "true": target_id(session, case.prompt, case.ground_truth),
        "new_rephrase": target_id(session, case.rephrase_prompt, case.target_new),
        "true_rephrase": target_id(session, case.rephrase_prompt, case.ground_truth),
        "new_loc": target_id(session, case.locality_prompt, case.target_new),
        "true_loc": target_id(session, case.locality_prompt, case.locality_ground_truth),
    }


@dataclass(frozen=True)
class CaseScores:
    """Probabilities of one case under one model state (edited or not)."""

    case_id: int
    p_new: float
    p_true: float
    p_new_rephrase: float
    p_true_rephrase: float
    p_new_loc: float
    p_true_loc: float
    fluency: float | None = None

    @property
    def efficacy(self) -> bool:
        return self.p_new > self.p_true

    @property
    def paraphrase(self) -> bool:
        return self.p_new_rephrase > self.p_true_rephrase

    @property
    def neighborhood(self) -> bool:
        return self.p_true_loc > self.p_new_loc

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(efficacy=self.efficacy, paraphrase=self.paraphrase, neighborhood=self.neighborhood)
        return d


@torch.no_grad()
def score_case(session: Session, case: EditCase, ids: dict[str, int] | None = None,
               fluency: float | None = None) -> CaseScores:
    """One batched forward of the prompt, rephrase and locality prompt, in the current state.

    With one-token ids (`case_token_ids`, ints) the last-token probabilities; with token
    sequences (`case_target_ids`, tuples) the per-token geometric means of `score_cases`.
    """
    if ids is not None and any(not isinstance(v, int) for v in ids.values()):
        return dataclasses.replace(score_cases(session, [case], [ids])[0], fluency=fluency)
    ids = ids or case_token_ids(session, case)
    probs = torch.softmax(session.last_logits([case.prompt, case.rephrase_prompt,
                                               case.locality_prompt]).float(), -1).cpu()
    return CaseScores(case.case_id, float(probs[0, ids["new"]]), float(probs[0, ids["true"]]),
                      float(probs[1, ids["new_rephrase"]]), float(probs[1, ids["true_rephrase"]]),
                      float(probs[2, ids["new_loc"]]), float(probs[2, ids["true_loc"]]), fluency)


_WORD = re.compile(r"\w+|[^\w\s]")


def generation_entropy(texts: list[str], ns=(2, 3), weights=(2 / 3, 4 / 3)) -> float:
    """ROME's fluency: mean over texts of mean_n w_n * H(n-gram frequencies) in bits."""
    vals = []
    for text in texts:
        words = _WORD.findall(text)
        ent = []
        for n, w in zip(ns, weights):
            grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
            total = sum(grams.values())
            h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
            ent.append(w * h)
        vals.append(sum(ent) / len(ent))
    return float(sum(vals) / len(vals)) if vals else float("nan")


class _RowSampler:
    """A logits processor that picks each row's next token by top-k sampling from that row's own
    generator, returning scores where only the pick is finite (greedy decoding then takes it):
    a row's text depends on its prompt and seed only, not on what else shares its batch."""

    def __init__(self, gens: list[torch.Generator], top_k: int):
        self.gens, self.top_k = gens, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top_v, top_i = scores.float().topk(min(self.top_k, scores.shape[-1]), dim=-1)
        cdf = torch.softmax(top_v, -1).cumsum(-1)
        u = torch.tensor([float(torch.rand((), generator=g)) for g in self.gens], device=scores.device)
        pick = (cdf < u[:, None]).sum(-1).clamp(max=top_i.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, top_i.gather(-1, pick[:, None]), 0.0)


@torch.no_grad()
def generate_texts(session: Session, prompts: list[str], max_new_tokens: int = 100, top_k: int = 5,
                   seed: int = 0, batch_size: int = 32) -> list[str]:
    """prompt + a top-k sampled continuation; prompt i is sampled with its own generator seeded
    ``seed + i``, so its text does not depend on the batch it ran in (the global RNG is untouched).

    Runs the session's pure HF view (`workbench.pure.pure_view`; same weights and edits) on
    left-padded batches of `batch_size` prompts.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    from ._hf import pure_generator

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    hf = pure_generator(session)
    cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                           pad_token_id=session.pad_id, eos_token_id=session.tokenizer.eos_token_id)
    out = []
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo : lo + batch_size]
        ids = [session.encode(p) for p in chunk]
        width = max(len(x) for x in ids)
        pad = session.pad_id
        batch = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids], device=session.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=session.device)
        gens = [torch.Generator().manual_seed(seed + lo + i) for i in range(len(chunk))]
        gen = hf.generate(batch, attention_mask=mask, generation_config=cfg,
                          logits_processor=LogitsProcessorList([_RowSampler(gens, top_k)]))
        out += [p + session.tokenizer.decode(g[width:], skip_special_tokens=True)
                for p, g in zip(chunk, gen)]
    return out


def summarize(scores: list[CaseScores]) -> dict:
    """Shares in percent (efficacy, paraphrase, neighborhood), mean gaps, mean fluency, n."""
    n = len(scores)
    if n == 0:
        return {"n": 0}

    def pct(attr):
        return 100.0 * sum(getattr(s, attr) for s in scores) / n

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "efficacy": pct("efficacy"),
        "paraphrase": pct("paraphrase"),
        "neighborhood": pct("neighborhood"),
        "fluency": mean([s.fluency for s in scores]),
        "n": n,
        "efficacy_gap": mean([s.p_new - s.p_true for s in scores]),
        "paraphrase_gap": mean([s.p_new_rephrase - s.p_true_rephrase for s in scores]),
        "neighborhood_gap": mean([s.p_true_loc - s.p_new_loc for s in scores]),
        "p_new": mean([s.p_new for s in scores]),
        "p_new_rephrase": mean([s.p_new_rephrase for s in scores]),
    }
