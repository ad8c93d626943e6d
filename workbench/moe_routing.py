"""MoEfication expert selection (Zhang et al. 2022): which experts a token needs.

Partition. `balanced_experts` clusters the layer's unit-normalised keys (`moe.key_features`)
with KMeans and then assigns units to centroids under a capacity of ceil(d_mlp / E) units
each (greedy by distance, the paper's balanced split), so that k experts are k/E of the FFN.

Routers score the E experts of one layer for each token; the top-k are kept. All share
`Router.scores(x, m) -> [n E]` with x the FFN input (site ``mlp_in``) and m the coefficients
(site ``mlp_post``, used only by the oracle):

    similarity  the paper's similarity selection: score_e = x . c_e, c_e the mean key of the
                expert's units (for gated MLPs the gate key g_i, which decides whether
                act(x . g_i) is open; SiLU / GELU never close fully, see below)
    mlp         the paper's MLP selection: a small trained network relu(x W1 + b1) W2 + b2,
                trained (soft cross-entropy) to predict each expert's share of the output norm
    oracle      the ground truth: score_e = ||y_e||, y_e = sum_{i in E_e} m_i v_i (needs the
                full FFN; an upper bound, not a speed-up)
    random      uniformly random scores (the floor)

Gated SiLU / GELU MLPs and the premise. MoEfication was shown on ReLU models, where most
coefficients are exactly zero and an expert whose units are all inactive can be skipped at
no cost. Here m_i = act(x . g_i) (x . u_i) is never exactly zero and takes both signs, so
dropping experts always changes the output; the question becomes how concentrated the
output norm is across experts (`moe.expert_shares`), and the quality curve measures the cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ._types import Float, Tensor
from .corpus import Corpus
from .errors import ShapeError, WorkbenchError, choices
from .ffn import ffn_weights
from .hooks import Site
from .moe import Experts, _windows, key_features, random_experts
from .session import Session

__all__ = ["balanced_experts", "Router", "ROUTER_KINDS", "similarity_router", "oracle_router",
           "random_router", "train_mlp_routers", "expert_norms", "expert_table", "expert_grams",
           "make_partitions"]

ROUTER_KINDS = ("similarity", "mlp", "oracle", "random")


def balanced_experts(session: Session, layer: int, n_experts: int = 48, seed: int = 0,
                     n_init: int = 1, max_iter: int = 50) -> Experts:
    """KMeans centroids of the normalised keys, units assigned under equal capacity."""
    from sklearn.cluster import KMeans

    session.check_layer(layer)
    if not 1 <= n_experts <= session.d_mlp:
        raise ShapeError(f"n_experts={n_experts} must be in 1..{session.d_mlp}")
    from threadpoolctl import threadpool_limits

    x = key_features(session, layer).numpy()
    with threadpool_limits(1):          # a 1536-point fit: threads cost more than they save
        km = KMeans(n_clusters=n_experts, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
    c = km.cluster_centers_
    dist = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]    # [d_mlp E] squared
    cap = -(-len(x) // n_experts)
    labels = np.full(len(x), -1)
    load = np.zeros(n_experts, dtype=int)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        unit, e = divmod(int(flat), n_experts)
        if labels[unit] < 0 and load[e] < cap:
            labels[unit] = e
            load[e] += 1
    return Experts(layer, torch.as_tensor(labels, dtype=torch.long), n_experts, "balanced-kmeans")


def make_partitions(session: Session, n_experts: int = 48, layers: Sequence[int] | None = None,
                    kind: str = "balanced", seed: int = 0) -> list[Experts]:
    """One partition per layer: ``balanced`` (KMeans + equal sizes) or ``random`` (same sizes)."""
    layers = range(session.n_layers) if layers is None else [session.check_layer(x) for x in layers]
    if kind not in ("balanced", "random"):
        raise WorkbenchError(f"kind={kind!r} is unknown; choose 'balanced' or 'random'")
    out = []
    for layer in tqdm(list(layers), desc="experts", leave=False):
        if kind == "balanced":
            out.append(balanced_experts(session, layer, n_experts, seed))
        else:
            size = -(-session.d_mlp // n_experts)
            lab = (torch.arange(session.d_mlp) // size).clamp_max(n_experts - 1)
            out.append(random_experts(Experts(layer, lab, n_experts, "blocks"), seed + layer))
    return out


def expert_table(experts: Experts) -> Tensor:
    """[E s] unit ids of each expert, padded with -1 to the largest expert's size s."""
    E = experts.n_experts
    sizes = torch.bincount(experts.labels, minlength=E)
    units = torch.full((E, int(sizes.max())), -1, dtype=torch.long)
    for e in range(E):
        idx = (experts.labels == e).nonzero().squeeze(1)
        units[e, : len(idx)] = idx
    return units


def expert_grams(values: Float[Tensor, "d_mlp d_model"], units: Tensor) -> Tensor:
    """[E s s] Gram matrices v_i . v_i' of each expert's value vectors (zero for padding)."""
    valid = (units >= 0).to(values.device)
    V = values.float()[units.clamp_min(0).to(values.device)] * valid[..., None]
    return V @ V.transpose(1, 2)


def expert_norms(m: Float[Tensor, "n d_mlp"], values: Float[Tensor, "d_mlp d_model"],
                 experts: Experts, units: Tensor | None = None,
                 grams: Tensor | None = None) -> Float[Tensor, "n E"]:
    """||y_e|| = ||sum_{i in E_e} m_i v_i||, as sqrt(m_e^T G_e m_e) with G_e the expert's Gram
    matrix (n E s^2 work instead of a d_model-wide product per expert)."""
    units = expert_table(experts) if units is None else units
    grams = expert_grams(values, units) if grams is None else grams
    u = units.to(m.device)
    me = m.float()[:, u.clamp_min(0)] * (u >= 0)                      # [n E s]
    q = (torch.einsum("nes,est->net", me, grams.to(m.device)) * me).sum(-1)
    return q.clamp_min(0).sqrt()


@dataclass(frozen=True)
class Router:
    """Scores the experts of one layer for each token (see module docstring).

    Args:
        experts: the partition (its `layer` is the router's layer).
        kind: one of `ROUTER_KINDS`.
        params: the router's tensors (similarity: centroids [E d_model]; mlp: W1 [d_model h],
            b1 [h], W2 [h E], b2 [E]; oracle: values [d_mlp d_model]; random: none).
        seed: for `random`.
    """

    experts: Experts
    kind: str
    params: dict[str, Tensor] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ROUTER_KINDS:
            raise WorkbenchError(f"router kind={self.kind!r} is unknown; choose one of {choices(ROUTER_KINDS)}")

    @property
    def layer(self) -> int:
        return self.experts.layer

    @property
    def n_experts(self) -> int:
        return self.experts.n_experts

    @property
    def needs_coefficients(self) -> bool:
        return self.kind == "oracle"

    def scores(self, x: Float[Tensor, "n d_model"] | None,
               m: Float[Tensor, "n d_mlp"] | None = None) -> Float[Tensor, "n E"]:
        ref = x if x is not None else m
        if ref is None:
            raise ShapeError(f"the {self.kind} router needs the residual x (the oracle: the FFN coefficients m)")
        p = {k: v.to(ref.device) for k, v in self.params.items()}
        if self.kind in ("similarity", "mlp"):
            if x is None:
                raise ShapeError(f"the {self.kind} router needs the residual x")
            if self.kind == "similarity":
                return x.float() @ p["centroids"].T
            return torch.relu(x.float() @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        if self.kind == "oracle":
            if m is None:
                raise ShapeError("the oracle router needs the FFN coefficients m")
            return expert_norms(m, p["values"], self.experts, p["units"], p["grams"])
        gen = torch.Generator(device="cpu").manual_seed(self.seed + ref.shape[0])
        return torch.rand(ref.shape[0], self.n_experts, generator=gen).to(ref.device)


def similarity_router(session: Session, experts: Experts) -> Router:
    """The paper's similarity selection: mean (gate) key of each expert's units."""
    w = ffn_weights(session, experts.layer)
    keys = (w.gate_keys if w.gate_keys is not None else w.keys).detach().float()
    onehot = torch.nn.functional.one_hot(experts.labels.to(keys.device), experts.n_experts).float()
    cent = (onehot.T @ keys) / onehot.sum(0).clamp_min(1)[:, None]
    return Router(experts, "similarity", {"centroids": cent.cpu()})


def oracle_router(session: Session, experts: Experts) -> Router:
    """Ground-truth selection by the norm of each expert's output."""
    values = ffn_weights(session, experts.layer).values.detach().float()
    units = expert_table(experts)
    return Router(experts, "oracle", {"values": values.cpu(), "units": units,
                                      "grams": expert_grams(values, units).cpu()})


def random_router(experts: Experts, seed: int = 0) -> Router:
    return Router(experts, "random", {}, seed)


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Small-tensor loops on CPU run on one thread (thread hand-off costs more than it saves)."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def _router_data(session: Session, corpus: Corpus, partitions: Sequence[Experts], max_tokens: int,
                 window: int):
    xs: dict[int, list[Tensor]] = {p.layer: [] for p in partitions}
    ts: dict[int, list[Tensor]] = {p.layer: [] for p in partitions}
    values = {p.layer: ffn_weights(session, p.layer).values.detach().float() for p in partitions}
    sites = [Site(k, p.layer) for p in partitions for k in ("mlp_in", "mlp_post")]
    for acts in _windows(session, corpus, sites, window, 2048, max_tokens):
        for p in partitions:
            x, m = acts[Site("mlp_in", p.layer)], acts[Site("mlp_post", p.layer)]
            nrm = expert_norms(m, values[p.layer], p)
            xs[p.layer].append(x.float().cpu())
            ts[p.layer].append((nrm / nrm.sum(-1, keepdim=True).clamp_min(1e-30)).cpu())
    return {k: torch.cat(v) for k, v in xs.items()}, {k: torch.cat(v) for k, v in ts.items()}


def train_mlp_routers(session: Session, corpus: Corpus, partitions: Sequence[Experts], hidden: int = 128,
                      steps: int = 300, lr: float = 3e-3, batch: int = 256, max_tokens: int = 4096,
                      window: int = 128, seed: int = 0) -> list[Router]:
    """The paper's MLP selection, one small router per layer, trained on `corpus`.

    Target: each expert's share of the output norm, ||y_e|| / sum_e' ||y_e'||; loss: cross-entropy
    of softmax(scores) against it (Adam, `steps` minibatches of `batch` tokens per layer).
    """
    if hidden < 1 or steps < 1 or batch < 1:
        raise ShapeError(f"hidden={hidden}, steps={steps}, batch={batch} must all be >= 1")
    X, T = _router_data(session, corpus, partitions, max_tokens, window)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in tqdm(partitions, desc="train routers", leave=False):
        x, t = X[p.layer], T[p.layer]
        if len(x) == 0:
            raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens to train routers on")
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        W1 = (torch.randn(x.shape[1], hidden, generator=gen) / np.sqrt(x.shape[1])).requires_grad_()
        b1 = torch.zeros(hidden, requires_grad=True)
        W2 = (torch.randn(hidden, p.n_experts, generator=gen) / np.sqrt(hidden)).requires_grad_()
        b2 = torch.zeros(p.n_experts, requires_grad=True)
        opt = torch.optim.Adam([W1, b1, W2, b2], lr=lr)
        with torch.enable_grad(), _single_thread(x.device):
            for _ in range(steps):
                idx = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
                logits = torch.relu(((x[idx] - mu) / sd) @ W1 + b1) @ W2 + b2
                loss = -(t[idx] * logits.log_softmax(-1)).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        # fold the input standardisation into the first layer: ((x - mu) / sd) W1 = x W1' + c
        W1f = (W1 / sd[:, None]).detach()
        b1f = (b1 - (mu / sd) @ W1).detach()
        out.append(Router(p, "mlp", {"W1": W1f, "b1": b1f, "W2": W2.detach(), "b2": b2.detach()}))
    return out
