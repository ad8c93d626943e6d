"""Concept search: value vectors that promote a token set, and boosting them (Geva et al. 2022).

A concept is a set of single tokens C (built from a word list: each word tried as " word",
"word", " Word", "Word"; variants that are not exactly one token are skipped and reported).
Each value vector v_i of layer l is read in the vocabulary as in `workbench.vocab`:
ell_i = unembed(v_i) = W_U^T norm_f(v_i) (+ b_U), a [d_vocab] row. Its concept score is the
mean z-score of the concept's logits within that row,

    score_i = mean_{t in C} (ell_i[t] - mean(ell_i)) / std(ell_i),

so a value whose top tokens are concept tokens scores high whatever its norm. Gated MLPs
(SwiGLU) have coefficients of both signs, and m_i < 0 writes -v_i, promoting what v_i
suppresses; `concept_search(signs=(1, -1))` therefore also scores -ell_i, and every hit
carries the sign of the coefficient that promotes the concept.

The search never builds the [d_mlp d_vocab] logit matrix: with u = [norm_f(v_i), 1] and
W~ = [W_U; b_U] ([d_model+1 d_vocab]), mean(ell_i) = u . mean_t W~[:, t] and
var(ell_i) = u^T cov(W~ columns) u, so only a [d_model+1]^2 Gram matrix and the concept's
columns are needed (exact; checked against `session.unembed` on a few rows, with a fallback
to the full projection when a model's unembedding is not affine, e.g. a logit soft-cap).

Boosting (the Geva 2022 "toxicity" recipe, run in the promoting direction): set the
coefficients of the top-N concept values to `sign * value` at every position, with
`workbench.hooks.set_neurons`, and measure the probability mass the next-token distribution
puts on C, against the same boost of N random keys of the same layers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._types import Float, Tensor
from .errors import ShapeError, TokenError, WorkbenchError
from .ffn import ffn_weights
from .hooks import Intervention, intervene, set_neurons
from .session import Session
from .vocab import TokenScore, top_tokens, value_logits

log = logging.getLogger(__name__)

__all__ = ["Concept", "concept_tokens", "load_concept", "ConceptNeuron", "ConceptSearch",
           "concept_scores", "concept_search", "boost_interventions", "random_interventions",
           "ConceptEffect", "concept_effect"]


@dataclass(frozen=True)
class Concept:
    """A named set of single tokens. `skipped`: words with no single-token variant."""

    name: str
    words: tuple[str, ...]
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    skipped: tuple[str, ...]


def concept_tokens(session: Session, words: Sequence[str], name: str = "concept",
                   variants: bool = True) -> Concept:
    """The single-token forms of `words` (" w", "w", " W", "W" when `variants`), deduplicated."""
    words = tuple(w.strip() for w in words if w.strip())
    if not words:
        raise TokenError(f"concept {name!r} has no words")
    ids: dict[int, str] = {}
    skipped = []
    for w in words:
        forms = [f" {w}", w, f" {w.capitalize()}", w.capitalize()] if variants else [w]
        got = False
        for f in dict.fromkeys(forms):
            enc = session.tokenizer(f, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.setdefault(int(enc[0]), f)
                got = True
        if not got:
            skipped.append(w)
    if not ids:
        raise TokenError(f"none of the {len(words)} words of concept {name!r} is a single token of the "
                         f"vocabulary (first words: {list(words[:5])})")
    if skipped:
        log.info("concept %s: %d words are not single tokens: %s", name, len(skipped), skipped[:10])
    return Concept(name, words, tuple(ids), tuple(ids.values()), tuple(skipped))


def load_concept(session: Session, path: str | Path) -> Concept:
    """A word list file: one word per line, '#' starts a comment."""
    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(f"concept word list {str(path)!r} does not exist")
    words = [ln.split("#", 1)[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    return concept_tokens(session, [w for w in words if w], name=p.stem)


# ---------------------------------------------------------------- scoring
def _normed_values(session: Session, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    return session.final_norm(ffn_weights(session, layer).values).float()


_STATS: dict = {}


@torch.no_grad()
def _affine_stats(session: Session):
    """W~ = [W_U; b_U] [d_model+1 V], its column mean mu [d_model+1] and the covariance of its
    columns (W~ - mu)(W~ - mu)^T / V, so that var(ell_i) = u^T cov u without cancellation."""
    W = session.W_U
    key = (id(session), W.data_ptr(), W._version)
    if key in _STATS:
        return _STATS[key]
    W = W.float()
    b = getattr(session.model.unembed, "b_U", None)
    b = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device) if b is None else b.float()
    Wt = torch.cat([W, b[None]], 0)
    mu = Wt.mean(1)
    Wc = Wt - mu[:, None]
    _STATS.clear()                      # one model at a time: a few MB
    _STATS[key] = (Wt, mu, Wc @ Wc.T / Wt.shape[1])
    return _STATS[key]


@torch.no_grad()
def concept_scores(session: Session, concept: Concept, layers: Sequence[int] | None = None,
                   check_rows: int = 4) -> Float[Tensor, "layer d_mlp"]:
    """Mean concept z-score of unembed(v_i) for every key of `layers` (see module docstring)."""
    layers = list(range(session.n_layers)) if layers is None else [session.check_layer(x) for x in layers]
    if not layers:
        raise WorkbenchError("layers is empty; give at least one layer")
    Wt, mu, gram = _affine_stats(session)
    ids = torch.tensor(concept.token_ids, device=Wt.device)
    cols = Wt[:, ids]                                                 # [d+1 c]
    out = []
    for layer in layers:
        u = _normed_values(session, layer)
        u = torch.cat([u, torch.ones(len(u), 1, dtype=u.dtype, device=u.device)], 1)  # [d_mlp d+1]
        mean = u @ mu
        var = ((u @ gram) * u).sum(-1)
        z = ((u @ cols) - mean[:, None]) / var.clamp_min(1e-30).sqrt()[:, None]
        if check_rows:
            full = value_logits(session, layer, list(range(check_rows))).double()
            zf = (full[:, ids] - full.mean(-1, keepdim=True)) / full.std(-1, unbiased=False, keepdim=True)
            if not torch.allclose(zf, z[:check_rows].double(), atol=1e-3, rtol=1e-3):
                log.info("layer %d: unembedding is not affine; using the full projection", layer)
                full = value_logits(session, layer).double()
                z = ((full[:, ids] - full.mean(-1, keepdim=True))
                     / full.std(-1, unbiased=False, keepdim=True)).float()
        out.append(z.mean(-1).float().cpu())
    return torch.stack(out)


@dataclass(frozen=True)
class ConceptNeuron:
    """One value vector that promotes the concept when its coefficient has sign `sign`.

    Args:
        score: mean concept z-score of sign * unembed(v_i).
        hits: concept tokens among the top `k` promoted tokens of sign * unembed(v_i).
        promoted: top tokens of sign * unembed(v_i).
    """

    layer: int
    neuron: int
    sign: int
    score: float
    hits: int
    promoted: tuple[TokenScore, ...]


@dataclass(frozen=True)
class ConceptSearch:
    """Top value vectors for a concept. scores: [layer d_mlp] (for sign +1), layers: rows."""

    concept: Concept
    layers: tuple[int, ...]
    scores: Float[Tensor, "layer d_mlp"]
    top: tuple[ConceptNeuron, ...]

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for n in self.top:
            out.setdefault(n.layer, []).append(n.neuron)
        return out


@torch.no_grad()
def concept_search(session: Session, concept: Concept, layers: Sequence[int] | None = None, top: int = 20,
                   signs: Sequence[int] = (1, -1), k: int = 20) -> ConceptSearch:
    """The `top` (layer, neuron, sign) whose value reading promotes `concept` most."""
    if top <= 0 or k <= 0:
        raise ShapeError(f"top={top} and k={k} must be >= 1")
    if not signs or any(s not in (1, -1) for s in signs):
        raise WorkbenchError(f"signs={tuple(signs)!r}; use (1,), (-1,) or (1, -1)")
    scores = concept_scores(session, concept, layers)
    layers = list(range(session.n_layers)) if layers is None else [int(x) for x in layers]
    cand = torch.stack([scores * s for s in signs])                  # [sign layer d_mlp]
    flat = cand.flatten().topk(min(top, cand.numel()))
    ids = set(concept.token_ids)
    hits = []
    for val, f in zip(flat.values.tolist(), flat.indices.tolist()):
        si, rest = divmod(f, scores.numel())
        li, n = divmod(rest, scores.shape[1])
        sign = int(signs[si])
        lg = value_logits(session, layers[li], [n])[0] * sign
        prom = top_tokens(session, lg, k)
        hits.append(ConceptNeuron(layers[li], n, sign, float(val), sum(t.id in ids for t in prom), prom))
    return ConceptSearch(concept, tuple(layers), scores, tuple(hits))


# ---------------------------------------------------------------- boosting
def boost_interventions(search: ConceptSearch, value: float = 10.0, n: int | None = None,
                        positions=None) -> list[Intervention]:
    """set_neurons(m_i = sign_i * value) for the top `n` hits (default all), one per layer."""
    if value <= 0:
        raise ShapeError(f"value={value} must be > 0 (the sign comes from each hit)")
    hits = search.top[: n if n is not None else len(search.top)]
    per: dict[int, tuple[list[int], list[float]]] = {}
    for h in hits:
        per.setdefault(h.layer, ([], []))
        per[h.layer][0].append(h.neuron)
        per[h.layer][1].append(h.sign * value)
    return [set_neurons(layer, ns, vs, positions) for layer, (ns, vs) in sorted(per.items())]


def random_interventions(session: Session, search: ConceptSearch, value: float = 10.0, n: int | None = None,
                         seed: int = 0, positions=None) -> list[Intervention]:
    """The control: as many random keys per layer as the boost uses, set to +-value (random sign)."""
    gen = torch.Generator().manual_seed(seed)
    hits = search.top[: n if n is not None else len(search.top)]
    taken = {(h.layer, h.neuron) for h in hits}
    per: dict[int, int] = {}
    for h in hits:
        per[h.layer] = per.get(h.layer, 0) + 1
    out = []
    for layer, cnt in sorted(per.items()):
        pool = [i for i in torch.randperm(session.d_mlp, generator=gen).tolist() if (layer, i) not in taken]
        signs = (torch.randint(0, 2, (cnt,), generator=gen) * 2 - 1).float() * value
        out.append(set_neurons(layer, pool[:cnt], signs.tolist(), positions))
    return out


@dataclass(frozen=True)
class ConceptEffect:
    """Probability mass on the concept's tokens, per prompt, in the next-token distribution.

    Args:
        before, boosted, control: [prompt] mass sum_{t in C} p(t) without edits, with the boost,
            with the random-key control.
        generations: greedy continuations (before, boosted) per prompt when asked, with the
            share of generated tokens that are concept tokens.
    """

    prompts: tuple[str, ...]
    interventions: tuple[str, ...]
    before: tuple[float, ...]
    boosted: tuple[float, ...]
    control: tuple[float, ...]
    top_boosted: tuple[tuple[TokenScore, ...], ...]
    generations: tuple[dict, ...] = ()

    @property
    def mean_before(self) -> float:
        return sum(self.before) / len(self.before)

    @property
    def mean_boosted(self) -> float:
        return sum(self.boosted) / len(self.boosted)

    @property
    def mean_control(self) -> float:
        return sum(self.control) / len(self.control)


@torch.no_grad()
def _mass(session: Session, prompts: Sequence[str], ids: Tensor) -> tuple[list[float], Tensor]:
    p = session.last_logits(list(prompts)).float().softmax(-1)
    return p[:, ids.to(p.device)].sum(-1).tolist(), p


@torch.no_grad()
def concept_effect(session: Session, concept: Concept, prompts: Sequence[str], boost: Sequence[Intervention],
                   control: Sequence[Intervention] = (), generate: int = 0, k: int = 8) -> ConceptEffect:
    """Concept mass of the next token for `prompts` with no edit, with `boost`, with `control`."""
    prompts = [p for p in prompts]
    if not prompts or any(not p.strip() for p in prompts):
        raise WorkbenchError("prompts must be a non-empty list of non-empty strings")
    if not boost:
        raise WorkbenchError("boost=[] is empty; give interventions (boost_interventions(...))")
    ids = torch.tensor(concept.token_ids)
    before, _ = _mass(session, prompts, ids)
    with intervene(session, *boost):
        boosted, pb = _mass(session, prompts, ids)
        top_b = tuple(top_tokens(session, pb[i], k) for i in range(len(prompts)))
    ctrl = before
    if control:
        with intervene(session, *control):
            ctrl, _ = _mass(session, prompts, ids)
    gens = []
    if generate:
        cset = set(concept.token_ids)
        for p in prompts:
            g0 = session.generate(p, generate)
            with intervene(session, *boost):
                g1 = session.generate(p, generate)
            share = [sum(t in cset for t in ids_) / max(len(ids_), 1)
                     for ids_ in (session.tokenizer(g, add_special_tokens=False)["input_ids"] for g in (g0, g1))]
            gens.append({"prompt": p, "before": g0, "boosted": g1, "share_before": share[0],
                         "share_boosted": share[1]})
    return ConceptEffect(tuple(prompts), tuple(iv.description for iv in boost), tuple(before),
                         tuple(boosted), tuple(ctrl), top_b, tuple(gens))
