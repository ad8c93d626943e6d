"""The frozen local linear model of one forward pass (attention, norms and gates held fixed).

One real forward fixes, per layer l and position p: the attention pattern P_l [head q k], every
RMSNorm's factor r = 1/sqrt(mean(x^2) + eps) (pre-attention, pre-FFN, final, and Gemma's
post-attention / post-FFN norms), and each gated unit's gate G_l[p, i] = act(x . g_i). Then

    h_0      = E[tok] * embed_scale                                     (token nodes)
    o_l      = post_a( sum_k P_l[., q, k] (r_a h_{l}[k] * w_a) W_v^T  W_o^T )
    h_l'     = h_l + o_l
    m_l[p,i] = G_l[p, i] * ((r_f h_l'[p] * w_f) . u_i)                  (unit nodes, read)
    h_{l+1}  = h_l' + post_f( sum_i m_l[., i] v_i )                      (unit nodes, written)
    logit_t  = (r_F h_L[last] * w_F) . W_U[t]                            (logit nodes)

is linear in the embeddings and the unit coefficients (plus biases, zero on Llama and Gemma),
so every unit coefficient and logit is exactly the sum of its direct contributions. `freeze`
captures the fixed quantities; `run` is the frozen forward (differentiable, batched), used to
check the freeze against the real logits and to perturb single units in tests. Other node
bases (transcoder latents with error nodes) replace the FFN sum in `run` (`basis.Basis`); the
``sae`` basis also replaces the residual leaving a block by an SAE's features plus an error node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .._types import Float, Int, Tensor
from ..errors import EmptyPromptError, TokenError, WorkbenchError
from ..session import Session
from .basis import Basis, unit_basis
from .weights import ModelWeights, NormWeights, model_weights

__all__ = ["PromptTooLongError", "Frozen", "FrozenRun", "freeze", "run", "prompt_ids"]


class PromptTooLongError(WorkbenchError):
    """A prompt longer than the model's context."""


@dataclass(frozen=True)
class Frozen:
    """The fixed quantities of one prompt's forward pass (P = prompt length, L = layers).

    Args:
        weights: the model's weights (views).
        tokens: [P] ids; str_tokens: their strings.
        embed: [P d_model] h_0, the scaled token embeddings.
        pattern: [L head P P] attention probabilities.
        r_attn, r_ffn: [L P] pre-attention / pre-FFN norm factors; r_final: [P].
        r_post_attn, r_post_ffn: [L P] post-sublayer norm factors (Gemma) or None.
        gate: [L P d_mlp] act(x . g_i).
        coeffs: [L P d_mlp] the real coefficients m_i (site mlp_post).
        logits: [d_vocab] the real logits at the last position.
    """

    weights: ModelWeights
    tokens: Int[Tensor, " P"]
    str_tokens: tuple[str, ...]
    embed: Float[Tensor, "P d_model"]
    pattern: Float[Tensor, "L head P P"]
    r_attn: Float[Tensor, "L P"]
    r_post_attn: Float[Tensor, "L P"] | None
    r_ffn: Float[Tensor, "L P"]
    gate: Float[Tensor, "L P d_mlp"]
    r_post_ffn: Float[Tensor, "L P"] | None
    r_final: Float[Tensor, " P"]
    coeffs: Float[Tensor, "L P d_mlp"]
    logits: Float[Tensor, " d_vocab"]

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_layers(self) -> int:
        return self.weights.n_layers

    def post_factors(self, kind: str) -> Float[Tensor, "L P"]:
        """`r_post_attn` (kind ``attn``) or `r_post_ffn` (``ffn``), for weights that have those
        norms (then `freeze` captured them)."""
        r = self.r_post_attn if kind == "attn" else self.r_post_ffn
        if r is None:
            raise WorkbenchError(f"the frozen pass holds no post-{kind} norm factors, but the "
                                 "weights have post-sublayer norms")
        return r


def prompt_ids(session: Session, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of one prompt (BOS per the session), checked against the model's context."""
    ids = session.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise EmptyPromptError("prompt has no tokens; give at least one")
    bad = [i for i in ids if not 0 <= i < session.d_vocab]
    if bad:
        raise TokenError(f"token ids {bad[:5]} are out of range; valid ids are 0..{session.d_vocab - 1}")
    n_ctx = int(getattr(session.hf_model.config, "max_position_embeddings", 0) or 0)
    if n_ctx and len(ids) > n_ctx:
        raise PromptTooLongError(f"prompt is {len(ids)} tokens; the model's context is {n_ctx} "
                                 f"(valid lengths 1..{n_ctx})")
    return ids


def _post_norm(norm: NormWeights | None, layer: int) -> NormWeights:
    if norm is None:
        raise WorkbenchError(f"layer {layer} lacks the post-sublayer norms that layer 0 has")
    return norm


@torch.no_grad()
def freeze(session: Session, prompt: str | Sequence[int], weights: ModelWeights | None = None) -> Frozen:
    """Run `prompt` once in the real model and capture what the local linear model holds fixed.

    Reads the residual entering each norm and the attention patterns through scoped hooks (the
    session is left as found).
    """
    w = weights or model_weights(session)
    ids = prompt_ids(session, prompt)
    tokens = torch.tensor([ids], device=session.device)
    L, gemma = w.n_layers, w.layers[0].post_attn is not None
    grab: dict[str, Tensor] = {}

    def keep(name):
        def fn(act, hook=None):
            grab[name] = act.detach()[0]
        return fn

    names = ["ln_final.hook_in"]
    for layer in range(L):
        names += [f"blocks.{layer}.ln1.hook_in", f"blocks.{layer}.attn.hook_pattern",
                  f"blocks.{layer}.ln2.hook_in", f"blocks.{layer}.mlp.hook_post"]
        if gemma:
            names += [f"blocks.{layer}.ln1_post.hook_in", f"blocks.{layer}.ln2_post.hook_in"]
    with session.hooks([(n, keep(n)) for n in names]):
        logits = session.model(tokens, return_type="logits")[0, -1]
    missing = [n for n in names if n not in grab]
    if missing:
        raise WorkbenchError(f"hooks {missing[:3]} did not fire; the bridge layout is not the expected one")
    dt = w.layers[0].W_down.dtype
    h_pre = [grab[f"blocks.{i}.ln1.hook_in"].to(dt) for i in range(L)]
    h_mid = [grab[f"blocks.{i}.ln2.hook_in"].to(dt) for i in range(L)]
    r_attn = torch.stack([w.layers[i].ln_attn.scale(h_pre[i]) for i in range(L)])
    r_ffn = torch.stack([w.layers[i].ln_ffn.scale(h_mid[i]) for i in range(L)])
    gate = []
    for i, lw in enumerate(w.layers):
        x = h_mid[i] * (r_ffn[i][:, None] * lw.ln_ffn.w)
        pre = x @ lw.W_gate.T
        if lw.b_gate is not None:
            pre = pre + lw.b_gate
        gate.append(lw.act(pre.to(torch.float32)).to(dt))
    r_pa = r_pf = None
    if gemma:
        r_pa = torch.stack([_post_norm(w.layers[i].post_attn, i).scale(grab[f"blocks.{i}.ln1_post.hook_in"].to(dt))
                            for i in range(L)])
        r_pf = torch.stack([_post_norm(w.layers[i].post_ffn, i).scale(grab[f"blocks.{i}.ln2_post.hook_in"].to(dt))
                            for i in range(L)])
    h_L = grab["ln_final.hook_in"].to(dt)
    # the embedding scale is applied in the model's dtype (Gemma rounds sqrt(d) to it)
    scale = torch.tensor(w.embed_scale, dtype=session.dtype).to(w.W_E.dtype)
    embed = w.W_E[tokens[0]] * scale
    str_tokens = tuple(session.to_str_tokens(ids))
    return Frozen(w, tokens[0], str_tokens, embed, torch.stack([grab[f"blocks.{i}.attn.hook_pattern"].to(dt)
                                                               for i in range(L)]),
                  r_attn, r_pa, r_ffn, torch.stack(gate), r_pf, w.ln_final.scale(h_L),
                  torch.stack([grab[f"blocks.{i}.mlp.hook_post"].to(dt) for i in range(L)]), logits.float())


@dataclass(frozen=True)
class FrozenRun:
    """Output of the frozen forward: source reads [... R P N] (R = the basis' rows, N = its
    width; L and d_mlp for units), the final residual, last-position logits, each layer's FFN
    input x and raw FFN output f [... L P d_model], and the residual leaving each block
    [... L P d_model] (before an SAE site there replaces it)."""

    reads: Float[Tensor, "... R P N"]
    resid: Float[Tensor, "... P d_model"]
    logits: Float[Tensor, "... d_vocab"]
    ffn_in: Float[Tensor, "... L P d_model"]
    ffn_out: Float[Tensor, "... L P d_model"]
    resid_post: Float[Tensor, "... L P d_model"]


def run(fz: Frozen, embed: Tensor | None = None, sources: Tensor | None = None,
        basis: Basis | None = None) -> FrozenRun:
    """The frozen forward. Batched over any leading dims of `embed` / `sources`.

    Args:
        embed: [... P d_model] token-node outputs (default: the prompt's h_0).
        sources: [... R P N] source activations written into the residual (grid of `basis`;
            error columns hold the error nodes' activations, 1 in the prompt's own run); None
            uses each source's own read (then the run reproduces the real forward). With
            `sources` given, reads are what each source would compute, all sources held as nodes.
        basis: the rows' sources (`basis.Basis`; default: FFN units, N = d_mlp). A residual
            site row (``sae`` basis) reads the residual leaving its block and replaces it.
    Returns:
        reads, the final residual, the pre-soft-cap logits at the last position, FFN inputs
        and outputs, the residual leaving each block.
    """
    w = fz.weights
    b = basis if basis is not None else unit_basis(w, fz.gate)
    width = b.width
    h = fz.embed if embed is None else embed
    rep = w.n_heads // w.n_kv_heads
    reads: list[Tensor] = []
    ins, outs, posts = [], [], []

    def source(row: int, x: Tensor) -> Tensor:
        """The row's reads on x (padded to the grid width), appended to `reads`; returns what
        the row writes (from `sources` when given)."""
        lb = b.layers[row]
        m = lb.reads(x)
        if lb.n_cols != width or lb.err is not None:
            full = m.new_zeros(*m.shape[:-1], width)
            full[..., :lb.n_read] = m
            if lb.err is not None:
                full[..., lb.n_read] = 1.0
            m = full
        reads.append(m)
        return lb.write(m if sources is None else sources[..., row, :, :], x)

    for layer, lw in enumerate(w.layers):
        a = h * (fz.r_attn[layer][:, None] * lw.ln_attn.w)
        v = a @ lw.W_v.T
        if lw.b_v is not None:
            v = v + lw.b_v
        v = v.unflatten(-1, (w.n_kv_heads, w.d_head)).repeat_interleave(rep, dim=-2)
        z = torch.einsum("hqk,...khd->...qhd", fz.pattern[layer], v)
        o = z.flatten(-2) @ lw.W_o.T
        if lw.b_o is not None:
            o = o + lw.b_o
        if lw.post_attn is not None:
            o = o * (fz.post_factors("attn")[layer][:, None] * lw.post_attn.w)
        h = h + o
        x = h * (fz.r_ffn[layer][:, None] * lw.ln_ffn.w)
        row = b.ffn_rows[layer]
        f = source(row, x)
        ins.append(x)
        outs.append(f)
        if lw.post_ffn is not None:
            f = f * (fz.post_factors("ffn")[layer][:, None] * lw.post_ffn.w)
        h = h + f
        posts.append(h)
        if row + 1 < b.n_rows and b.layers[row + 1].site == "resid_post":
            h = source(row + 1, h)  # the SAE site replaces the residual wholly
    y = h[..., -1, :] * (fz.r_final[-1] * w.ln_final.w)
    logits = y @ w.W_U.T
    if w.b_U is not None:
        logits = logits + w.b_U
    return FrozenRun(torch.stack(reads, dim=-3), h, logits, torch.stack(ins, dim=-3), torch.stack(outs, dim=-3),
                     torch.stack(posts, dim=-3))
