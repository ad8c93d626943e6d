"""Split one layer's output at each position i into contributions from each input position j.

Kobayashi, Kuribayashi, Yokoi, Inui (ICLR 2024), extended from norm-based attention analysis
(Kobayashi et al. 2020, 2021) to the whole layer. x_j is the residual entering the block
(``resid_pre``) at position j; every vector the block computes at position i is written as

    v_i = sum_{j <= i} v_{i<-j}  (+ a bias term, zero for the bias-free models we load)

and the decomposition is carried component by component (pre-norm Llama / SmolLM2 block; the
Gemma 3 block adds the two post-norms marked [G]):

    ATB   attention with its input norm: a_{i<-j} = sum_h alpha^h_ij v^h_j W_O^h, where
          v^h_j = norm1(x_j) W_V^h only depends on x_j (norm1 acts per position, so it belongs to
          the source j). Per-head maps are the norm-based ||alpha^h_ij v^h_j W_O^h||.
    LN    [G] post-attention RMSNorm with its scale frozen at position i (then linear):
          p_{i<-j} = a_{i<-j} * w / rms(a_i)
    RES   h_{i<-j} = p_{i<-j} + [i == j] x_i                          (h = resid_mid)
    LN    pre-FF RMSNorm, frozen scale: m_{i<-j} = h_{i<-j} * w2 / rms(h_i)   (m = mlp_in)
    FF    gated MLP f(m) = W_down (act(W_g m) * (W_u m)); the nonlinearity is split across sources
          with integrated gradients along the straight path t m_i, t in [0, 1], baseline 0:
              f_{i<-j} = int_0^1 J_f(t m_i) m_{i<-j} dt
          so sum_j f_{i<-j} = f(m_i) - f(0) = f(m_i) (completeness; f(0) = 0 without biases).
    LN    [G] post-FF RMSNorm, frozen scale: q_{i<-j} = f_{i<-j} * w3 / rms(f_i)
    RES   y_{i<-j} = h_{i<-j} + q_{i<-j}                              (y = resid_post)

Gated MLPs. With g = W_g m_i and u = W_u m_i (per unit), d/dt [act(t g) * (t u)] has two terms
by the product rule, so the path integral factorises per position i and unit k:

    f_{i<-j} = W_down [ A_i * (W_g m_{i<-j}) + B_i * (W_u m_{i<-j}) ],
    A_i = int_0^1 act'(t g) t u dt,   B_i = int_0^1 act(t g) dt         (elementwise, [d_mlp])

i.e. a source moves the FF output both through the gate (weighted by how steeply the gate
opens along the path, times the up value) and through the up projection (weighted by the mean
gate opening). The integrals are one-dimensional, so the step count costs almost nothing; the
expensive part (every pair through W_g, W_u, W_down) is done once. `rule="midpoint"` is the
Riemann sum IG uses (error O(1/steps^2)); `rule="gauss"` is Gauss-Legendre quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._types import Float, Tensor
from ..errors import ShapeError, WorkbenchError
from ..session import Session

__all__ = ["LayerDecomposition", "decompose_layer", "decompose_all", "ig_gated_split", "RULES"]

RULES = ("midpoint", "gauss")


def quadrature(steps: int, rule: str) -> tuple[Tensor, Tensor]:
    """Nodes and weights on [0, 1] for `steps` points."""
    if not isinstance(steps, int) or steps < 1:
        raise ShapeError(f"steps={steps!r} must be an integer >= 1")
    if rule == "midpoint":
        t = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        return t, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(steps)
        return torch.as_tensor((x + 1) / 2), torch.as_tensor(w / 2)
    raise WorkbenchError(f"rule={rule!r} is unknown; choose one of {', '.join(map(repr, RULES))}")


def ig_gated_split(parts: Float[Tensor, "... src d_model"], w_gate: Float[Tensor, "d_mlp d_model"],
                   w_up: Float[Tensor, "d_mlp d_model"], w_down: Float[Tensor, "d_model d_mlp"], act,
                   steps: int = 64, rule: str = "midpoint") -> Float[Tensor, "... src d_model"]:
    """Integrated-gradients split of a gated MLP's output over the parts of its input.

    parts[..., j, :] are the pieces m_{<-j} of the input m = sum_j parts[..., j, :]; returns
    f_{<-j} with sum_j f_{<-j} ~= W_down(act(W_g m) * (W_u m)) (see module docstring).
    """
    t, w = quadrature(steps, rule)
    G = parts @ w_gate.T                       # [... src d_mlp]
    U = parts @ w_up.T
    g, u = G.sum(-2), U.sum(-2)                # [... d_mlp]
    tt = t.to(g.device, g.dtype).view(-1, *([1] * g.dim()))
    ww = w.to(g.device, g.dtype).view(-1, *([1] * g.dim()))
    with torch.enable_grad():
        z = (tt * g.detach()).requires_grad_(True)
        a = act(z)
        (da,) = torch.autograd.grad(a.sum(), z)
    A = (ww * da * tt * u).sum(0)              # int act'(t g) t u dt
    B = (ww * a.detach()).sum(0)               # int act(t g) dt
    return (A.unsqueeze(-2) * G + B.unsqueeze(-2) * U) @ w_down.T


def _rms_frozen(norm_module, d_model: int, like: Tensor) -> tuple[Tensor, float]:
    """(w_eff, eps) of an RMSNorm module, so that norm(x) = x * w_eff / sqrt(mean(x^2) + eps)."""
    eps = getattr(norm_module, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm_module, "eps", None)
    name = type(norm_module).__name__
    if eps is None or "RMSNorm" not in name:
        raise WorkbenchError(f"normalisation {name} is not an RMSNorm; the attention-map "
                             "decomposition supports RMSNorm models (Llama/SmolLM2, Gemma)")
    ones = torch.ones(d_model, dtype=like.dtype, device=like.device)
    w_eff = norm_module(ones).to(like.dtype) * float(np.sqrt(1.0 + eps))
    return w_eff, float(eps)


def _freeze(norm_module, parts: Tensor, total: Tensor) -> Tensor:
    """Frozen-scale RMSNorm applied to parts [i j d] of totals [i d] (scale from the total)."""
    w_eff, eps = _rms_frozen(norm_module, total.shape[-1], total)
    inv = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)       # [i 1]
    return parts * inv.unsqueeze(1) * w_eff


@dataclass(frozen=True)
class LayerDecomposition:
    """The contribution vectors of one layer on one prompt.

    Args:
        layer: the block. str_tokens: the prompt's tokens (n).
        scopes: names of the vectors after each component, e.g. ("ATB", "ATB+RES", ...).
        parts: [scope i j d_model] contribution of source j to the vector at position i
            (zero for j > i).
        actual: [scope i d_model] the model's own vector after each component (from hooks).
        head_norms: [head i j] ||alpha^h_ij v^h_j W_O^h||, the per-head norm-based maps.
        ff_scope: index of the FF output scope in `scopes`.
        steps, rule: the integrated-gradients quadrature.
    """

    layer: int
    str_tokens: tuple[str, ...]
    scopes: tuple[str, ...]
    parts: Float[Tensor, "scope qpos kpos d_model"]
    actual: Float[Tensor, "scope qpos d_model"]
    head_norms: Float[Tensor, "head qpos kpos"]
    ff_scope: int
    steps: int
    rule: str

    def relative_errors(self) -> Float[Tensor, "scope qpos"]:
        """||sum_j parts[s, i, j] - actual[s, i]|| / ||actual[s, i]|| per scope and position."""
        diff = self.parts.sum(2) - self.actual
        return diff.norm(dim=-1) / self.actual.norm(dim=-1).clamp_min(1e-30)


def _capture_layers(session: Session, tokens: Tensor, layers: list[int]) -> dict[str, Tensor]:
    names = []
    for layer in layers:
        b = f"blocks.{layer}"
        names += [f"{b}.hook_resid_pre", f"{b}.attn.hook_pattern", f"{b}.attn.hook_v",
                  f"{b}.attn.hook_out", f"{b}.hook_resid_mid", f"{b}.mlp.hook_in",
                  f"{b}.mlp.hook_out", f"{b}.hook_resid_post"]
    store: dict[str, Tensor] = {}

    def saver(name):
        def fn(act, hook=None):
            store[name] = act.detach()
        return fn

    stop = max(layers) + 1
    with torch.no_grad(), session.hooks([(n, saver(n)) for n in names]):
        if stop < session.n_layers:
            session.model(tokens, stop_at_layer=stop)
        else:
            session.model(tokens, return_type=None)
    return store


def _check_biases(hf_layer, layer: int) -> None:
    mods = {"o_proj": hf_layer.self_attn.o_proj, "v_proj": hf_layer.self_attn.v_proj,
            "gate_proj": hf_layer.mlp.gate_proj, "up_proj": hf_layer.mlp.up_proj,
            "down_proj": hf_layer.mlp.down_proj}
    bad = [k for k, m in mods.items() if getattr(m, "bias", None) is not None]
    if bad:
        raise WorkbenchError(f"layer {layer} has biases in {bad}; the decomposition here covers "
                             "bias-free gated MLP models (Llama/SmolLM2, Gemma)")


@torch.no_grad()
def _decompose(session: Session, store: dict[str, Tensor], layer: int, str_tokens, steps: int,
               rule: str, dtype: torch.dtype) -> LayerDecomposition:
    hf_layer = session.hf_model.model.layers[layer]
    if not hasattr(hf_layer.mlp, "gate_proj"):
        raise WorkbenchError(f"layer {layer}'s MLP ({type(hf_layer.mlp).__name__}) is not gated; "
                             "the FF split here is for gated MLPs (SmolLM2, Gemma)")
    _check_biases(hf_layer, layer)
    gemma = hasattr(hf_layer, "pre_feedforward_layernorm")
    b = f"blocks.{layer}"

    def get(name):
        return store[f"{b}.{name}"][0].to(dtype)

    x, pattern, v = get("hook_resid_pre"), get("attn.hook_pattern"), get("attn.hook_v")
    n = x.shape[0]
    H, d_head = pattern.shape[0], v.shape[-1]
    v = v.repeat_interleave(H // v.shape[1], dim=1)                      # GQA -> [j head d_head]
    W_O = hf_layer.self_attn.o_proj.weight.to(dtype).T.reshape(H, d_head, -1)
    vo = torch.einsum("jhe,hed->hjd", v, W_O)                            # [head j d]
    head_norms = pattern * vo.norm(dim=-1).unsqueeze(1)                  # [head i j]
    a = torch.einsum("hij,hjd->ijd", pattern, vo)
    eye = torch.eye(n, dtype=dtype, device=x.device).unsqueeze(-1)
    scopes, parts, actual = ["ATB"], [a], [get("attn.hook_out")]
    if gemma:
        p = _freeze(hf_layer.post_attention_layernorm, a, a.sum(1))
        scopes.append("ATB+LN")
        parts.append(p)
        actual.append(hf_layer.post_attention_layernorm(actual[-1]))
        a = p
    h = a + eye * x.unsqueeze(0)
    scopes.append(scopes[-1] + "+RES")
    parts.append(h)
    actual.append(get("hook_resid_mid"))
    ln2 = hf_layer.pre_feedforward_layernorm if gemma else hf_layer.post_attention_layernorm
    m = _freeze(ln2, h, h.sum(1))
    scopes.append(scopes[-1] + "+LN")
    parts.append(m)
    actual.append(get("mlp.hook_in"))
    mlp = hf_layer.mlp
    f = torch.zeros_like(m)
    for i0 in range(0, n, 16):                                           # bounded memory
        i1 = min(n, i0 + 16)
        f[i0:i1, :i1] = ig_gated_split(m[i0:i1, :i1], mlp.gate_proj.weight.to(dtype), mlp.up_proj.weight.to(dtype),
                                 mlp.down_proj.weight.to(dtype), mlp.act_fn, steps, rule)
    # j > i: m_{i<-j} = 0 (causal pattern, residual only at j = i), so f_{i<-j} = 0 exactly
    ff_scope = len(scopes)
    scopes.append(scopes[-1] + "+FF")
    parts.append(f)
    actual.append(get("mlp.hook_out"))
    if gemma:
        q = _freeze(hf_layer.post_feedforward_layernorm, f, actual[-1])
        scopes.append(scopes[-1] + "+LN")
        parts.append(q)
        actual.append(hf_layer.post_feedforward_layernorm(actual[-1]))
        f = q
    scopes.append(scopes[-1] + "+RES")
    parts.append(h + f)
    actual.append(get("hook_resid_post"))
    return LayerDecomposition(layer, tuple(str_tokens), tuple(scopes), torch.stack(parts),
                              torch.stack(actual), head_norms, ff_scope, steps, rule)


def _tokens(session: Session, prompt: str):
    batch = session.tokenize(prompt)
    return batch.tokens, batch.str_tokens[0]


def decompose_all(session: Session, prompt: str, layers=None, steps: int = 64, rule: str = "midpoint",
                  dtype: torch.dtype = torch.float32):
    """Yield `LayerDecomposition` for each layer (default all) of one prompt, one forward."""
    quadrature(steps, rule)                                              # validates early
    layers = list(range(session.n_layers)) if layers is None else [session.check_layer(x) for x in layers]
    if not layers:
        raise WorkbenchError("layers is empty; give at least one layer")
    tokens, str_tokens = _tokens(session, prompt)
    store = _capture_layers(session, tokens, layers)
    for layer in layers:
        yield _decompose(session, store, layer, str_tokens, steps, rule, dtype)


def decompose_layer(session: Session, prompt: str, layer: int, steps: int = 64, rule: str = "midpoint",
                    dtype: torch.dtype = torch.float32) -> LayerDecomposition:
    """The contribution vectors of `layer` on `prompt` (see module docstring).

    Example:
        >>> d = decompose_layer(s, "The Eiffel Tower is in Paris", 3)
        >>> d.relative_errors().amax(-1)      # per scope; FF scopes carry the IG error
    """
    return next(decompose_all(session, prompt, [layer], steps, rule, dtype))
