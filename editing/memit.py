"""MEMIT (Meng et al. 2023): a batch of facts written into the FFNs of a range of layers at once.

For requests i = 1..n with subjects s_i and targets t_i:

1. Target residuals. At the last edited layer L, find z_i = h_L(s_i) + delta_i, the residual at
   the subject's last token that makes the model say t_i:

       delta_i = argmin  -mean_p mean_j log p(t_ij | prefix_p + prompt_i, t_i<j; h_L += delta_i)
                         + kl_factor * KL(p0 || p)("{s_i} is a") + weight_decay * (|delta_i| / |h_L|)^2
       |delta_i| <= clamp * |h_L(s_i)|

   All requests are optimised together (each row of the batch carries its own delta_i; the
   loss is a sum of independent terms, so this equals n separate optimisations).
2. Spread over layers. For l in layers, ascending, with the updates of the earlier layers in
   place: keys K_l [n d_mlp] (the FFN coefficients at the subject's last token, mean over the
   context prefixes), current residuals h_L [n d_model], and the share of what is missing that
   layer l takes, R_l = (Z - h_L) / (number of layers left). The update minimises

       sum_i |k_i (W + D) - (k_i W + r_i)|^2 + lambda * E_k |k D|^2
       => D_l = (lambda C_l + K_l^T K_l)^{-1} K_l^T R_l          [d_mlp d_model]

   with C_l = E[k k^T] the cached key statistics of layer l and lambda the preserved-key
   weight (MEMIT: 15,000 for GPT-J). With ``pin_prompt`` the bare prompt's key (no prefix) is a
   second row of K_l with the same r_i, as ROME's pinned u (`editing.rome.left_vector`).

`compute_memit_update` never writes the model's weights: earlier layers' updates act through
forward hooks on the pure view while later layers are computed. `editing.apply` writes the
returned `LayerUpdate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from workbench._types import Float, Tensor
from workbench.errors import ShapeError, WorkbenchError
from workbench.session import Session

from ._prompts import EditError, SubjectPrompt, check_edit_layer, fill, locate_subject, target_ids
from .covariance import KeyStats
from .requests import EditRequest, LayerUpdate
from .rome import _down_proj, context_prefixes
from .zcache import ZCache
from .zstar import target_residuals

log = logging.getLogger(__name__)

__all__ = ["MemitConfig", "compute_memit_update", "check_requests", "critical_layers",
           "layer_keys", "memit_solve", "request_keys"]


@dataclass(frozen=True)
class MemitConfig:
    """Settings of a MEMIT (or AlphaEdit) batch update.

    Args:
        layers: the edited FFN layers (consecutive, ascending); the last one holds the target
            residuals. None: the caller must pass them (`critical_layers` picks a window).
        lam: weight of the preserved-key term lambda E|k D|^2 (MEMIT's mom2_update_weight).
        steps, lr: Adam steps and learning rate of each delta_i.
        kl_factor, weight_decay, clamp: as in ROME (`RomeConfig`), clamp relative to |h_L|.
        stop_nll: a request stops optimising once its mean target NLL is below this.
        prefix_lengths, prefixes_per_length, seed: the generated context prefixes.
        pin_prompt: add the bare prompt's key as a second key row of each request.
        chunk: requests per forward pass in the optimisation and key collection (memory).
        essence_prompt: template of the KL prompt.
    """

    layers: tuple[int, ...] | None = None
    lam: float = 15000.0
    steps: int = 25
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    stop_nll: float = 0.3
    prefix_lengths: tuple[int, ...] = (5, 10)
    prefixes_per_length: int = 5
    seed: int = 0
    pin_prompt: bool = True
    chunk: int = 16
    essence_prompt: str = "{} is a"

    def __post_init__(self):
        if self.layers is not None:
            if not self.layers or list(self.layers) != sorted(set(self.layers)):
                raise WorkbenchError(f"layers={self.layers} must be distinct and ascending")
        if not self.lam >= 0:
            raise WorkbenchError(f"lam={self.lam} must be >= 0")
        if self.steps < 1 or not self.lr > 0 or self.chunk < 1:
            raise WorkbenchError(f"steps={self.steps}, chunk={self.chunk} must be >= 1 and lr={self.lr} > 0")
        if self.kl_factor < 0 or self.weight_decay < 0 or not self.clamp > 0:
            raise WorkbenchError("kl_factor and weight_decay must be >= 0 and clamp > 0")
        if self.prefixes_per_length < 0 or any(n < 1 for n in self.prefix_lengths):
            raise WorkbenchError(f"prefix_lengths={self.prefix_lengths} must be >= 1")
        if "{}" not in self.essence_prompt:
            raise WorkbenchError(f"essence_prompt={self.essence_prompt!r} needs '{{}}' for the subject")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MemitConfig:
        d = dict(d)
        for k in ("layers", "prefix_lengths"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def critical_layers(curve: Sequence[float], n: int = 5) -> tuple[int, ...]:
    """The window of `n` consecutive layers with the largest summed FFN indirect effect
    (the causal trace's mean curve at the subject's last token, `ffn_peak_layer`)."""
    if not curve:
        raise WorkbenchError("the trace curve is empty")
    n = max(1, min(n, len(curve)))
    sums = [sum(curve[i : i + n]) for i in range(len(curve) - n + 1)]
    start = max(range(len(sums)), key=sums.__getitem__)
    return tuple(range(start, start + n))


def check_requests(session: Session, requests: Sequence[EditRequest]) -> list[tuple[int, ...]]:
    """Target ids of each request; one clear error for an empty batch, a subject not in its
    prompt, a target the tokenizer cannot produce, or two requests that give the same subject
    and prompt different targets."""
    if not requests:
        raise EditError("the batch is empty; give at least one EditRequest")
    seen: dict[tuple[str, str], str] = {}
    out = []
    for i, r in enumerate(requests):
        if not isinstance(r, EditRequest):
            raise EditError(f"request {i} is a {type(r).__name__}; give EditRequest(prompt, subject, target)")
        sp = locate_subject(session, r.prompt, r.subject)
        key = (sp.text, r.subject)
        if key in seen and seen[key] != r.target.strip():
            raise EditError(f"requests give subject={r.subject!r} in prompt={sp.text!r} two targets: "
                            f"{seen[key]!r} and {r.target.strip()!r}; keep one")
        seen[key] = r.target.strip()
        out.append(target_ids(session, sp.text, r.target))
    return out


def _check_stats(session: Session, layers: Sequence[int], stats: Mapping[int, KeyStats]) -> None:
    if layers and layers[-1] >= session.n_layers - 1:
        raise EditError(f"layers={list(layers)}: the last edited layer must be below the model's last "
                        f"layer ({session.n_layers - 1}); a residual written at the subject there never "
                        "reaches the prompt's last token")
    for layer in layers:
        check_edit_layer(session, layer)
        if layer not in stats:
            raise EditError(f"no key statistics for layer {layer}; have layers {sorted(stats)}")
        if tuple(stats[layer].moment.shape) != (session.d_mlp, session.d_mlp):
            raise ShapeError(f"key statistics of layer {layer} are {tuple(stats[layer].moment.shape)}; "
                             f"need ({session.d_mlp}, {session.d_mlp})")


class _Stop(Exception):
    pass


def _delta_hooks(session: Session, deltas: Mapping[int, Tensor]) -> list:
    """Forward hooks on the pure view's down_proj that add k @ D_l (the model as if edited)."""
    handles = []
    for layer, D in deltas.items():
        Dd = D.to(session.device)

        def add(module, inputs, out, Dd=Dd):
            return out + (inputs[0].to(Dd.dtype) @ Dd).to(out.dtype)

        handles.append(_down_proj(session, layer).register_forward_hook(add))
    return handles


@torch.no_grad()
def layer_keys(session: Session, layer: int, last: int, prompts: Sequence[Sequence],
               deltas: Mapping[int, Tensor] | None = None, chunk: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """Keys at `layer` and residuals after block `last` at the subject's last token.

    Args:
        prompts: per request, its `SubjectPrompt`s (the bare prompt first).
        deltas: updates of other layers, in effect through hooks (weights untouched).
    Returns:
        (mean key over each request's prompts [n d_mlp], bare-prompt key [n d_mlp],
         bare-prompt residual after block `last` [n d_model]).
    """
    from ._hf import pure_lm, trunk_layer
    from .rome import _batch

    hf = pure_lm(session)
    mean_k, bare_k, bare_h = [], [], []
    got: dict = {}

    def save_k(module, inputs):
        got["k"] = inputs[0].detach()

    def save_h(module, inputs, out):
        got["h"] = (out[0] if isinstance(out, tuple) else out).detach()
        raise _Stop

    handles = _delta_hooks(session, deltas or {})
    handles.append(_down_proj(session, layer).register_forward_pre_hook(save_k))
    handles.append(trunk_layer(hf, last).register_forward_hook(save_h))
    try:
        for lo in range(0, len(prompts), chunk):
            group = prompts[lo : lo + chunk]
            flat = [sp for sps in group for sp in sps]
            tokens, _, subj = _batch(session, flat)
            try:
                hf.base_model(input_ids=tokens, use_cache=False)
            except _Stop:
                pass
            rows = torch.arange(len(flat), device=tokens.device)
            k = got["k"][rows, subj].float()
            h = got["h"][rows, subj].float()
            at = 0
            for sps in group:
                mean_k.append(k[at : at + len(sps)].mean(0))
                bare_k.append(k[at])
                bare_h.append(h[at])
                at += len(sps)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(mean_k).cpu(), torch.stack(bare_k).cpu(), torch.stack(bare_h).cpu()


def memit_solve(stats: KeyStats, K: Float[Tensor, "n d_mlp"], R: Float[Tensor, "n d_model"],
                lam: float, preserved: Tensor | None = None) -> Float[Tensor, "d_mlp d_model"]:
    """D = (lam C + K^T K)^{-1} K^T R in float64 (the minimiser of |K D - R|^2 + lam tr(D^T C D)).

    `preserved` [d_mlp d_mlp], K_p^T K_p of keys whose outputs must stay (e.g. the requests of a
    batch that already took, `editing.loop`'s repair rounds), joins the matrix:
    D = (lam C + K_p^T K_p + K^T K)^{-1} K^T R, the minimiser with |K_p D|^2 added."""
    C = stats.moment.double()
    K, R = K.double(), R.double()
    M = lam * C + K.T @ K
    if preserved is not None:
        M = M + preserved.double().to(M.device)
    return torch.linalg.solve(M, K.T @ R)


def request_keys(update: LayerUpdate, requests: Sequence[int] | None = None) -> dict[int, Tensor]:
    """Per layer, the key rows [m d_mlp] of the requests at positions `requests` of
    `update.requests` (with ``pin_prompt`` each request has two rows, i and n + i); None: all."""
    if requests is None:
        return dict(update.keys)
    n = len(update.requests)
    out = {}
    for layer, K in update.keys.items():
        if n == 0 or K.shape[0] % n:
            raise EditError(f"update keys at layer {layer} have {K.shape[0]} rows for {n} requests")
        bad = [i for i in requests if not 0 <= i < n]
        if bad:
            raise EditError(f"request positions {bad} are out of range; the update has {n} requests (0..{n - 1})")
        rows = [j * n + i for j in range(K.shape[0] // n) for i in requests]
        out[layer] = K[rows]
    return out


Solver = Callable[[int, Tensor, Tensor], Tensor]


def request_prompts(session: Session, requests: Sequence[EditRequest], cfg
                    ) -> tuple[list[tuple[int, ...]], list[list[SubjectPrompt]], list[SubjectPrompt]]:
    """What step 1 optimises on: per request its target ids, its prompts (the bare prompt, then
    each of `cfg`'s context prefixes + prompt) and its essence prompt, subjects located."""
    tids = check_requests(session, requests)
    prefixes = context_prefixes(session, cfg)
    prompts = []
    for r in requests:
        text = fill(r.prompt, r.subject)
        prompts.append([locate_subject(session, p + text, r.subject, search_from=len(p)) for p in prefixes])
    ess = [locate_subject(session, cfg.essence_prompt, r.subject) for r in requests]
    return tids, prompts, ess


def spread_update(session: Session, requests: Sequence[EditRequest], layers: Sequence[int], cfg, solver: Solver,
                  method: str, progress: bool = False, z_cache: ZCache | None = None) -> LayerUpdate:
    """Steps 1 and 2 of the module docstring with `solver(layer, K, R) -> D` for step 2's solve;
    `z_cache`: step 1's targets read from and written to it (`editing.zcache`)."""
    t0 = time.perf_counter()
    tids, prompts, ess = request_prompts(session, requests, cfg)
    last = layers[-1]
    Z, zinfo = target_residuals(session, last, prompts, ess, tids, cfg, progress=progress, cache=z_cache)
    t_z = time.perf_counter() - t0
    deltas: dict[int, Tensor] = {}
    keys: dict[int, Tensor] = {}
    for i, layer in enumerate(layers):
        k_mean, k_bare, h = layer_keys(session, layer, last, prompts, deltas, cfg.chunk)
        R = (Z - h) / (len(layers) - i)
        K = torch.cat([k_mean, k_bare]) if cfg.pin_prompt else k_mean
        RR = torch.cat([R, R]) if cfg.pin_prompt else R
        D = solver(layer, K, RR)
        deltas[layer] = D.float()
        keys[layer] = K.float()
        log.info("%s L%d: |D| %.3f, |R| mean %.3f", method, layer, float(D.norm()), float(R.norm(dim=-1).mean()))
    _, _, h_end = layer_keys(session, layers[0], last, prompts, deltas, cfg.chunk)
    info = {**zinfo, "z_seconds": t_z, "seconds": time.perf_counter() - t0, "layers": list(layers),
            "residual_left": float(((Z - h_end).norm(dim=-1) / (Z - zinfo["h0"]).norm(dim=-1)
                                    .clamp(min=1e-12)).mean())}
    info["z"] = Z                                                     # [n d_model] targets
    return LayerUpdate({k: v.cpu() for k, v in deltas.items()}, tuple(requests), method, keys, info)


def compute_memit_update(session: Session, requests: Sequence[EditRequest], stats: Mapping[int, KeyStats],
                         config: MemitConfig | None = None, progress: bool = False,
                         preserved: Mapping[int, Tensor] | None = None,
                         z_cache: ZCache | None = None) -> LayerUpdate:
    """The MEMIT update of a batch of requests over `config.layers` (default: the layers of
    `stats`); the model's weights are not touched. `preserved`: layer -> K_p^T K_p [d_mlp d_mlp]
    of keys whose outputs the update must keep (`memit_solve`; absent layers: none). `z_cache`:
    target residuals cached per request (`editing.zcache.ZCache`; a cut run resumes there).

    Raises EditError (empty batch, conflicting targets, missing statistics), TokenError (a
    target the tokenizer cannot produce), SubjectNotFound, LayerOutOfRange, before any work.

    Example:
        >>> up = compute_memit_update(s, reqs, {l: key_stats(s, l, corpus) for l in (2, 3, 4)})
        >>> with apply(s, up): ...
    """
    cfg = config or MemitConfig()
    layers = tuple(cfg.layers) if cfg.layers is not None else tuple(sorted(stats))
    if not layers:
        raise EditError("no layers to edit: give MemitConfig(layers=...) or statistics of some layers")
    _check_stats(session, layers, stats)
    check_requests(session, requests)

    def solve(layer, K, R):
        return memit_solve(stats[layer], K, R, cfg.lam, (preserved or {}).get(layer))

    return spread_update(session, requests, layers, cfg, solve, "memit", progress, z_cache)
