"""Activation sparsity and key clusters as experts (MoEfication, Zhang et al. 2022).

Active keys. SmolLM2 and Gemma have gated MLPs, m_i = act(x . g_i) * (x . u_i) with SiLU or
GELU: no coefficient is exactly zero and both signs occur. A key counts as active on a token
when its coefficient is large relative to that token's largest one,

    active_i(t) = |m_i(t)| > threshold * max_j |m_j(t)|        (threshold 0.1 by default),

and a layer's sparsity statistic is the mean over tokens of the share of active keys
(1/d_mlp) sum_i active_i(t). With ReLU MLPs this is close to the share of nonzero units.

Experts. Keys are clustered with scikit-learn KMeans on unit-normalised key vectors (for a
gated MLP the key of unit i is [g_i/||g_i||, u_i/||u_i||], the gate and up keys
concatenated), giving a partition of the d_mlp units into `n_experts` experts E_1..E_n.
Expert e's part of the FFN output on token t is y_e(t) = sum_{i in E_e} m_i(t) v_i, and

    norm share_e(t) = ||y_e(t)|| / sum_e' ||y_e'(t)||          (in [0, 1], sums to 1)
    projection_e(t) = y_e(t) . y(t) / ||y(t)||^2,  y = sum_e y_e  (sums to 1 exactly)

MoEfication's premise is that a token needs few experts: `ExpertShares.top_curve[j]` is the
mean over tokens of the norm share carried by the token's j+1 largest experts, reported
against a random partition with the same expert sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._types import Float, Int, Tensor
from .capture import capture_tokens
from .corpus import Corpus
from .errors import ShapeError, WorkbenchError
from .ffn import ffn_weights
from .hooks import Site
from .session import Session, TokenBatch

__all__ = ["Sparsity", "activation_sparsity", "active_mask", "Experts", "cluster_experts",
           "random_experts", "ExpertShares", "expert_shares", "layer_coefficients"]


def active_mask(m: Float[Tensor, "n d_mlp"], threshold: float = 0.1) -> Tensor:
    """|m_i| > threshold * max_j |m_j| per row (see module docstring)."""
    if not 0 <= threshold < 1:
        raise ShapeError(f"threshold={threshold} must be in [0, 1)")
    a = m.float().abs()
    return a > threshold * a.amax(-1, keepdim=True)


def _windows(session: Session, corpus: Corpus, sites, window, tokens_per_batch, max_tokens):
    for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                             max_tokens=max_tokens, progress=False, desc="moe"):
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
        cap = capture_tokens(session, TokenBatch(wb.tokens, lengths), sites)
        b0 = int(wb.bos)
        yield {s: cap[s][:, b0:].reshape(-1, cap[s].shape[-1]) for s in sites}


def _layers(session: Session, layers):
    out = list(range(session.n_layers)) if layers is None else [session.check_layer(x) for x in layers]
    if not out:
        raise WorkbenchError("layers is empty; give at least one layer")
    return out


@dataclass(frozen=True)
class Sparsity:
    """Per-layer share of active keys per token.

    Args:
        layers: [L]. mean_active, std_active: [L] mean and std over tokens of the active share.
        key_frequency: [L d_mlp] share of tokens on which each key is active.
        threshold: the relative threshold. n_tokens: tokens measured.
    """

    layers: tuple[int, ...]
    mean_active: tuple[float, ...]
    std_active: tuple[float, ...]
    key_frequency: Float[Tensor, "L d_mlp"]
    threshold: float
    n_tokens: int

    def rows(self) -> list[dict]:
        return [{"layer": a, "active_share": b, "std": c, "dead_keys": int((f == 0).sum())}
                for a, b, c, f in zip(self.layers, self.mean_active, self.std_active, self.key_frequency)]


@torch.no_grad()
def activation_sparsity(session: Session, corpus: Corpus, layers: Sequence[int] | None = None,
                        threshold: float = 0.1, window: int = 64, tokens_per_batch: int = 4096,
                        max_tokens: int | None = 8192) -> Sparsity:
    """Share of keys active per token (|m_i| > threshold * max_j |m_j|), per layer."""
    layers = _layers(session, layers)
    active_mask(torch.zeros(1, 1), threshold)  # validates threshold
    sites = [Site("mlp_post", layer) for layer in layers]
    L = len(layers)
    s1 = torch.zeros(L, dtype=torch.float64)
    s2 = torch.zeros(L, dtype=torch.float64)
    freq = torch.zeros(L, session.d_mlp, dtype=torch.float64)
    n = 0
    for acts in _windows(session, corpus, sites, window, tokens_per_batch, max_tokens):
        for j, s in enumerate(sites):
            act = active_mask(acts[s], threshold)
            share = act.double().mean(-1).cpu()
            s1[j] += share.sum()
            s2[j] += (share ** 2).sum()
            freq[j] += act.sum(0).double().cpu()
        n += acts[sites[0]].shape[0]
    if n == 0:
        raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens")
    mean = s1 / n
    std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
    return Sparsity(tuple(layers), tuple(mean.tolist()), tuple(std.tolist()), (freq / n).float(),
                    float(threshold), n)


# ---------------------------------------------------------------- experts
@dataclass(frozen=True)
class Experts:
    """A partition of one layer's keys. labels: [d_mlp] expert of each unit; method: how made."""

    layer: int
    labels: Int[Tensor, " d_mlp"]
    n_experts: int
    method: str

    @property
    def sizes(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.n_experts).tolist()


def key_features(session: Session, layer: int) -> Float[Tensor, "d_mlp f"]:
    """Unit-normalised key of each unit; [gate, up] concatenated for gated MLPs."""
    w = ffn_weights(session, layer)

    def unit(x):
        x = x.detach().float().cpu()
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)

    parts = [unit(w.gate_keys)] if w.gate_keys is not None else []
    return torch.cat(parts + [unit(w.keys)], -1)


def cluster_experts(session: Session, layer: int, n_experts: int = 16, seed: int = 0, n_init: int = 2,
                    max_iter: int = 100) -> Experts:
    """KMeans (scikit-learn) of the layer's normalised keys into `n_experts` experts."""
    from sklearn.cluster import KMeans

    session.check_layer(layer)
    if not 1 <= n_experts <= session.d_mlp:
        raise ShapeError(f"n_experts={n_experts} must be in 1..{session.d_mlp}")
    x = key_features(session, layer).numpy()
    km = KMeans(n_clusters=n_experts, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
    return Experts(layer, torch.as_tensor(km.labels_, dtype=torch.long), n_experts, "kmeans")


def random_experts(experts: Experts, seed: int = 0) -> Experts:
    """A random partition with the same expert sizes (the baseline)."""
    gen = torch.Generator().manual_seed(seed)
    labels = experts.labels[torch.randperm(len(experts.labels), generator=gen)]
    return Experts(experts.layer, labels, experts.n_experts, "random")


@dataclass(frozen=True)
class ExpertShares:
    """How the FFN output of one layer splits over experts on corpus tokens.

    Args:
        norm_share: [E] mean over tokens of ||y_e|| / sum_e' ||y_e'||.
        projection: [E] mean over tokens of y_e . y / ||y||^2 (sums to 1).
        top_curve: [E] mean norm share carried by each token's j+1 largest experts.
        top_curve_random: [E] the same for a random partition of the same sizes.
        active_experts: mean number of experts holding an active key (see `active_mask`).
    """

    layer: int
    n_experts: int
    sizes: tuple[int, ...]
    norm_share: Float[Tensor, " E"]
    projection: Float[Tensor, " E"]
    top_curve: Float[Tensor, " E"]
    top_curve_random: Float[Tensor, " E"]
    active_experts: float
    n_tokens: int


def layer_coefficients(session: Session, corpus: Corpus, layer: int, window: int = 64,
                       max_tokens: int = 4096) -> Float[Tensor, "n d_mlp"]:
    """m_i on the first `max_tokens` corpus tokens (BOS columns dropped)."""
    s = Site("mlp_post", session.check_layer(layer))
    rows = [a[s] for a in _windows(session, corpus, [s], window, 4096, max_tokens)]
    if not rows:
        raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens")
    return torch.cat(rows)[:max_tokens]


def _parts(m: Tensor, values: Tensor, labels: Tensor, E: int) -> Tensor:
    """y_e for every token: [n E d_model]."""
    onehot = torch.nn.functional.one_hot(labels.to(m.device), E).to(m.dtype)   # [d_mlp E]
    return torch.einsum("ni,ie,id->ned", m, onehot, values)


def _norm_shares(parts: Tensor) -> Tensor:
    norms = torch.linalg.vector_norm(parts, dim=-1)           # [n E]
    return norms / norms.sum(-1, keepdim=True).clamp_min(1e-30)


@torch.no_grad()
def expert_shares(session: Session, experts: Experts, coefficients: Float[Tensor, "n d_mlp"],
                  threshold: float = 0.1, seed: int = 0, chunk: int = 256) -> ExpertShares:
    """Share of the FFN output each expert carries on tokens with coefficients `coefficients`."""
    if coefficients.dim() != 2 or coefficients.shape[1] != session.d_mlp or len(coefficients) == 0:
        raise ShapeError(f"coefficients {tuple(coefficients.shape)} must be [n>0 {session.d_mlp}]")
    values = ffn_weights(session, experts.layer).values.float()
    E = experts.n_experts
    rand = random_experts(experts, seed)
    ns = torch.zeros(E, dtype=torch.float64)
    pj = torch.zeros(E, dtype=torch.float64)
    curve = torch.zeros(E, dtype=torch.float64)
    curve_r = torch.zeros(E, dtype=torch.float64)
    act_e = 0.0
    for i in range(0, len(coefficients), chunk):
        m = coefficients[i : i + chunk].float().to(values.device)
        parts = _parts(m, values, experts.labels, E)
        sh = _norm_shares(parts)
        ns += sh.sum(0).double().cpu()
        y = parts.sum(1)
        pj += (torch.einsum("ned,nd->ne", parts, y) / (y * y).sum(-1, keepdim=True).clamp_min(1e-30)
               ).sum(0).double().cpu()
        curve += sh.sort(-1, descending=True).values.cumsum(-1).sum(0).double().cpu()
        shr = _norm_shares(_parts(m, values, rand.labels, E))
        curve_r += shr.sort(-1, descending=True).values.cumsum(-1).sum(0).double().cpu()
        act = active_mask(m, threshold).float()                         # [n d_mlp]
        onehot = torch.nn.functional.one_hot(experts.labels.to(m.device), E).float()
        act_e += float(((act @ onehot) > 0).sum())
    n = len(coefficients)
    return ExpertShares(experts.layer, E, tuple(experts.sizes), (ns / n).float(), (pj / n).float(),
                        (curve / n).float(), (curve_r / n).float(), act_e / n, n)
