"""Knowledge probes: where a known fact's answer appears in the logit lens, and whether the
model's final prediction gets it.

For a prompt with answer token ``a`` (the first token of " " + answer) and the residual stream
``r_l`` [d_model] leaving block ``l`` at the last prompt position, the logit lens reads

    p_l(a) = softmax(W_U · norm_final(r_l))[a]          (workbench.Session.unembed)

``first_top1_layer`` is the smallest ``l`` with ``argmax p_l = a`` (None when never); at the
last layer the lens equals the model's logits, so ``final_correct = argmax logits == a``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.session import Session

from .context import ProbeContext
from .labels import load_facts
from .registry import Param, register_kind
from .spec import PROJECT_ROOT

__all__ = ["FactLens", "KnowledgeResult", "fact_lens", "run_knowledge", "default_facts_path",
           "knowledge_note"]

SHARED_FACTS = PROJECT_ROOT.parent / "shared" / "data" / "known_facts" / "known_1000.json"


@dataclass(frozen=True)
class FactLens:
    """The logit-lens trajectory of one fact's answer token (curves over layers 0..L-1)."""

    prompt: str
    answer: str
    answer_token: str
    answer_tokens: int
    p_curve: tuple[float, ...]
    rank_curve: tuple[int, ...]
    first_top1_layer: int | None
    final_correct: bool
    final_top_token: str
    final_p: float


@dataclass(frozen=True)
class KnowledgeResult:
    """Facts with their curves, and aggregates over them."""

    facts: tuple[FactLens, ...]
    accuracy: float
    mean_p_curve: tuple[float, ...]
    top1_rate_curve: tuple[float, ...]
    first_top1_hist: tuple[int, ...]
    never_top1: int
    median_first_top1_correct: float | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_facts"] = len(self.facts)
        return d


@torch.no_grad()
def fact_lens(session: Session, facts: list[dict], batch_size: int = 16, progress: bool = True) -> KnowledgeResult:
    """Logit-lens curves of `facts` (``{"prompt", "answer"}``) at every layer's resid_post."""
    from workbench.capture import capture

    L = session.n_layers
    sites = [f"resid_post:{layer}" for layer in range(L)]
    out: list[FactLens] = []
    for i in tqdm(range(0, len(facts), batch_size), desc="facts", leave=False, disable=not progress):
        chunk = facts[i : i + batch_size]
        batch = session.tokenize([f["prompt"] for f in chunk])
        cap = capture(session, batch, sites, logits=True)
        rows = torch.arange(len(chunk), device=batch.tokens.device)
        last = batch.last.to(batch.tokens.device)
        resid = torch.stack([cap[s][rows, last] for s in sites], 1)  # [b, layer, d_model]
        probs = session.unembed(resid).float().softmax(-1)  # [b, layer, d_vocab]
        final = cast(torch.Tensor, cap.logits)[rows, last].float()  # [b, d_vocab] (logits=True)
        for j, f in enumerate(chunk):
            ids = session.tokenizer(" " + f["answer"].strip(), add_special_tokens=False)["input_ids"]
            a = int(ids[0])
            p = probs[j, :, a]
            rank = (probs[j] > p[:, None]).sum(-1)
            top1 = (rank == 0).nonzero()
            top = int(final[j].argmax())
            out.append(FactLens(
                prompt=f["prompt"], answer=f["answer"], answer_token=session.tokenizer.decode([a]),
                answer_tokens=len(ids), p_curve=tuple(float(x) for x in p),
                rank_curve=tuple(int(x) for x in rank),
                first_top1_layer=int(top1[0]) if len(top1) else None,
                final_correct=top == a, final_top_token=session.tokenizer.decode([top]),
                final_p=float(final[j].softmax(-1)[a])))
    return summarise(out, L)


def summarise(facts: list[FactLens], n_layers: int) -> KnowledgeResult:
    """Aggregate per-fact curves: accuracy, mean p(answer) per layer, first-top-1 histogram."""
    if not facts:
        raise ValueError("no facts to summarise")
    P = np.array([f.p_curve for f in facts])
    R = np.array([f.rank_curve for f in facts])
    hist = [0] * n_layers
    for f in facts:
        if f.first_top1_layer is not None:
            hist[f.first_top1_layer] += 1
    firsts = [f.first_top1_layer for f in facts if f.final_correct and f.first_top1_layer is not None]
    return KnowledgeResult(
        facts=tuple(facts), accuracy=float(np.mean([f.final_correct for f in facts])),
        mean_p_curve=tuple(float(x) for x in P.mean(0)),
        top1_rate_curve=tuple(float(x) for x in (R == 0).mean(0)),
        first_top1_hist=tuple(hist), never_top1=sum(f.first_top1_layer is None for f in facts),
        median_first_top1_correct=float(np.median(firsts)) if firsts else None)


def default_facts_path() -> Path | None:
    """../shared known_1000.json when present, else None (the project's data/labels/facts.json)."""
    return SHARED_FACTS if SHARED_FACTS.is_file() else None


@register_kind(
    "knowledge",
    params={
        "facts_path": Param(str, "auto", doc="facts JSON ('auto': shared known_1000, else data/labels/facts.json)"),
        "max_facts": Param(int, 100, doc="facts sampled (seeded) from the file"),
        "batch_size": Param(int, 16, doc="prompts per forward pass"),
    },
    doc="For known facts: the layer where the answer first becomes the logit-lens top-1, its "
        "probability curve over layers, and the accuracy of the final prediction.",
)
def run_knowledge(ctx: ProbeContext, params: dict) -> dict:
    path = default_facts_path() if params["facts_path"] == "auto" else Path(params["facts_path"])
    facts = load_facts(path)
    rng = np.random.default_rng(ctx.seed_for("knowledge"))
    if len(facts) > params["max_facts"]:
        facts = [facts[i] for i in sorted(rng.choice(len(facts), params["max_facts"], replace=False))]
    res = fact_lens(ctx.session, facts, params["batch_size"], ctx.progress)
    d = res.to_dict()
    d["source"] = str(path) if path else "data/labels/facts.json"
    d["summary"] = {"accuracy": res.accuracy, "n_facts": len(res.facts),
                    "median_first_top1_correct": res.median_first_top1_correct}
    d["note"] = knowledge_note(res, ctx.session.n_layers)
    return d


def knowledge_note(res: KnowledgeResult, n_layers: int) -> str:
    """One sentence on what the section shows, from the numbers themselves."""
    n = len(res.facts)
    what = f"The model's final prediction is right for {res.accuracy:.0%} of {n} facts"
    m = res.median_first_top1_correct
    if m is None:
        return what + "; the answer never becomes the logit lens's top token before the last layer."
    where = ("late, in the upper third of the layers" if m >= n_layers - n_layers // 3 else
             "in the middle layers" if m >= n_layers // 3 else "early, in the lower third")
    return (what + f"; for those, the answer first becomes the logit lens's top token at median "
            f"layer {m:.0f} of {n_layers}: recalled {where}.")
