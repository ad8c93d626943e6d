"""MoEfication applied: run the model with only the top-k experts of every FFN, and what it costs.

`top_k_experts(session, routers, k)` returns interventions for the hooks layer: at each routed
layer one at ``mlp_in`` reads the FFN input x (and leaves it unchanged), one at ``mlp_post``
keeps the coefficients m_i of the units in the k best-scored experts of each token and zeros
the rest. Use them like every other intervention (undone when the block exits, also on error):

    with intervene(s, *top_k_experts(s, routers, k=12)):
        logits = s.logits(prompt)

With k = n_experts every unit is kept and the model is exactly the unmodified one.

`quality_curve` measures, for each share of experts, the perplexity of held-out text and the
top-1 accuracy on known facts (prompt -> first token of the answer) for several routers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .corpus import Corpus
from .errors import EmptyPromptError, ShapeError, WorkbenchError
from .hooks import Intervention, Site, intervene
from .moe_routing import Router
from .session import Session

__all__ = ["top_k_experts", "check_k", "k_for_share", "perplexity", "fact_accuracy",
           "QualityCurve", "quality_curve"]


def check_k(k: int | float, n_experts: int) -> int:
    """k as an int when 0 < k <= n_experts (an int-valued float counts), else ShapeError naming
    the range."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or int(k) != k or not 0 < k <= n_experts:
        raise ShapeError(f"k={k!r} experts is out of range; valid range is 1..{n_experts} "
                         f"(0 < k <= n_experts={n_experts})")
    return int(k)


def k_for_share(share: float, n_experts: int) -> int:
    """The number of experts for a share in (0, 1]: round(share * E), at least 1."""
    if not 0 < share <= 1:
        raise ShapeError(f"share={share!r} of experts is out of range; valid range is (0, 1]")
    return max(1, min(n_experts, round(share * n_experts)))


def top_k_experts(session: Session, routers: Sequence[Router], k: int | float) -> list[Intervention]:
    """Interventions keeping only each token's top-k experts at every routed layer."""
    routers = list(routers)
    if not routers:
        raise WorkbenchError("routers is empty; give one Router per layer to route")
    seen = set()
    for r in routers:
        session.check_layer(r.layer)
        if r.layer in seen:
            raise WorkbenchError(f"two routers for layer {r.layer}; give at most one per layer")
        seen.add(r.layer)
        if len(r.experts.labels) != session.d_mlp:
            raise ShapeError(f"router for layer {r.layer} partitions {len(r.experts.labels)} units; "
                             f"the model has d_mlp={session.d_mlp}")
        k = check_k(k, r.n_experts)
    out: list[Intervention] = []
    for r in routers:
        state: dict[str, torch.Tensor] = {}

        def read(act, state=state):
            state["x"] = act
            return act

        def mask(act, r=r, state=state):
            shape = act.shape
            m = act.reshape(-1, shape[-1])
            x = state.pop("x", None)
            xs = x.reshape(-1, x.shape[-1]) if x is not None else None
            if k == r.n_experts:
                keep_e = torch.ones(m.shape[0], r.n_experts, dtype=torch.bool, device=m.device)
            else:
                top = r.scores(xs, m if r.needs_coefficients else None).topk(k, dim=-1).indices
                keep_e = torch.zeros(m.shape[0], r.n_experts, dtype=torch.bool, device=m.device)
                keep_e.scatter_(1, top.to(m.device), True)
            keep = keep_e[:, r.experts.labels.to(m.device)]               # [n d_mlp]
            return torch.where(keep, m, torch.zeros((), dtype=m.dtype, device=m.device)).reshape(shape)

        desc = f"top-{k}/{r.n_experts} {r.kind} experts at L{r.layer}"
        out.append(Intervention(Site("mlp_in", r.layer), read, f"read x for {desc}"))
        out.append(Intervention(Site("mlp_post", r.layer), mask, desc))
    return out


@torch.no_grad()
def perplexity(session: Session, corpus: Corpus, interventions: Sequence[Intervention] = (), window: int = 128,
               max_tokens: int | None = 4096, tokens_per_batch: int = 2048) -> float:
    """exp(mean next-token NLL) over corpus windows (every prediction inside a window)."""
    total, count = 0.0, 0
    with intervene(session, *interventions):
        for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                                 max_tokens=max_tokens, progress=False):
            logp = session.model(wb.tokens, return_type="logits")[:, :-1].float().log_softmax(-1)
            nll = -logp.gather(-1, wb.tokens[:, 1:, None]).squeeze(-1)
            total += float(nll.sum())
            count += nll.numel()
    if count == 0:
        raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens")
    return math.exp(total / count)


@torch.no_grad()
def fact_accuracy(session: Session, prompts: Sequence[str], answers: Sequence[str],
                  interventions: Sequence[Intervention] = (), batch: int = 32) -> float:
    """Share of prompts whose greedy next token is the first token of the answer."""
    if not prompts or len(prompts) != len(answers):
        raise EmptyPromptError(f"give as many answers as prompts (got {len(prompts)} prompts, "
                               f"{len(answers)} answers), at least one")
    targets = []
    for a in answers:
        ids = session.tokenizer(a, add_special_tokens=False)["input_ids"]
        if not ids:
            raise EmptyPromptError(f"answer={a!r} has no tokens")
        targets.append(ids[0])
    hits = 0
    with intervene(session, *interventions):
        for i in range(0, len(prompts), batch):
            pred = session.last_logits(list(prompts[i : i + batch])).argmax(-1).cpu()
            hits += int((pred == torch.tensor(targets[i : i + batch])).sum())
    return hits / len(prompts)


@dataclass(frozen=True)
class QualityCurve:
    """Quality against the share of experts kept, per method.

    Args:
        shares: the requested shares of experts (0, 1]. ks: the k used for each share.
        n_experts: experts per layer. layers: the routed layers.
        perplexity: method -> [share] held-text perplexity. base_perplexity: unmodified model.
        accuracy: method -> [share] known-fact top-1 accuracy (empty when no facts given).
        base_accuracy: unmodified model's accuracy (nan when no facts).
        n_tokens, n_facts: evaluation sizes.
    """

    shares: tuple[float, ...]
    ks: tuple[int, ...]
    n_experts: int
    layers: tuple[int, ...]
    perplexity: dict[str, tuple[float, ...]]
    base_perplexity: float
    accuracy: dict[str, tuple[float, ...]]
    base_accuracy: float
    n_tokens: int
    n_facts: int

    def to_dict(self) -> dict:
        return {"shares": list(self.shares), "ks": list(self.ks), "n_experts": self.n_experts,
                "layers": list(self.layers), "perplexity": {k: list(v) for k, v in self.perplexity.items()},
                "base_perplexity": self.base_perplexity,
                "accuracy": {k: list(v) for k, v in self.accuracy.items()},
                "base_accuracy": self.base_accuracy, "n_tokens": self.n_tokens, "n_facts": self.n_facts}


def quality_curve(session: Session, methods: Mapping[str, Sequence[Router]], held: Corpus,
                  shares: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
                  facts: tuple[Sequence[str], Sequence[str]] | None = None,
                  max_tokens: int = 4096, window: int = 128) -> QualityCurve:
    """Perplexity (and fact accuracy) with the top-k experts kept, for each method and share.

    `methods` maps a name (e.g. "similarity", "mlp", "oracle", "random partition") to one
    router per layer; every method must use the same number of experts.
    """
    if not methods:
        raise WorkbenchError("methods is empty; give at least one name -> routers")
    Es = {r.n_experts for rs in methods.values() for r in rs}
    if len(Es) != 1:
        raise ShapeError(f"methods use different expert counts {sorted(Es)}; use one")
    E = Es.pop()
    ks = [k_for_share(s, E) for s in shares]
    layers = sorted({r.layer for rs in methods.values() for r in rs})
    n_tok = max_tokens // window * (window - 1)
    base_ppl = perplexity(session, held, (), window, max_tokens)
    base_acc = fact_accuracy(session, *facts) if facts else float("nan")
    ppl: dict[str, list[float]] = {}
    acc: dict[str, list[float]] = {}
    bar = tqdm(total=len(methods) * len(ks), desc="moe curve", leave=False)
    for name, routers in methods.items():
        ppl[name], acc[name] = [], []
        for k in ks:
            ivs = top_k_experts(session, routers, k)
            ppl[name].append(perplexity(session, held, ivs, window, max_tokens))
            if facts:
                acc[name].append(fact_accuracy(session, *facts, interventions=ivs))
            bar.update(1)
    bar.close()
    return QualityCurve(tuple(float(s) for s in shares), tuple(ks), E, tuple(layers),
                        {k: tuple(v) for k, v in ppl.items()}, base_ppl,
                        {k: tuple(v) for k, v in acc.items()}, base_acc, n_tok,
                        len(facts[0]) if facts else 0)
