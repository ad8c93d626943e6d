"""The model's weights as plain tensors for the frozen local linear model (Llama and Gemma 3).

Read once from the Hugging Face modules under the TransformerLens bridge (views, no copies):

    attention   W_v [kv*d_head d_model], W_o [d_model head*d_head] (+ b_v, b_o when present)
    FFN         W_gate, W_up [d_mlp d_model], W_down [d_model d_mlp] (+ biases when present)
    norms       the effective RMSNorm scale w (Llama: weight; Gemma: 1 + weight) and eps,
                for the pre-attention, pre-FFN, final and (Gemma) post-sublayer norms
    embedding   W_E [d_vocab d_model] times the embedding scale (Gemma: sqrt(d_model))
    unembedding W_U [d_vocab d_model] (+ b_U), final logit soft-capping (if the config has one)

Only RMSNorm models with gated MLPs are supported (every model the workbench embeds); any
other raises `UnsupportedModelError` naming what was found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._types import Float, Tensor
from ..errors import WorkbenchError
from ..session import Session

__all__ = ["UnsupportedModelError", "NormWeights", "LayerWeights", "ModelWeights", "model_weights", "copy_bytes"]


class UnsupportedModelError(WorkbenchError):
    """A model whose blocks the frozen local linear model does not cover."""


def _orig(module):
    """The Hugging Face module under any number of bridge wrappers."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    return module


@dataclass(frozen=True)
class NormWeights:
    """An RMSNorm y = x / sqrt(mean(x^2) + eps) * w, with w the effective elementwise scale."""

    w: Float[Tensor, " d_model"]
    eps: float

    def scale(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """The per-vector factor r = 1 / sqrt(mean(x^2) + eps) that freezing holds fixed."""
        return torch.rsqrt(x.float().pow(2).mean(-1) + self.eps).to(x.dtype)


def _norm(module, d_model: int, dtype: torch.dtype) -> NormWeights:
    m = _orig(module)
    cls = type(m).__name__
    if "LayerNorm" in cls and "RMS" not in cls:
        raise UnsupportedModelError(f"norm {cls} is a LayerNorm; the frozen graph supports RMSNorm models "
                                    "(Llama, Gemma, Qwen, Mistral families)")
    eps = getattr(m, "eps", None)
    if eps is None:
        eps = getattr(m, "variance_epsilon", None)
    if eps is None:
        raise UnsupportedModelError(f"norm {cls} has no eps / variance_epsilon attribute")
    with torch.no_grad():  # effective scale from the module itself: y(1) = w / sqrt(1 + eps)
        ones = torch.ones(1, d_model, dtype=torch.float32, device=m.weight.device)
        w = (m(ones.to(m.weight.dtype)).float() * (1.0 + eps) ** 0.5)[0]
    return NormWeights(w.to(dtype), float(eps))


def _bias(linear, dtype: torch.dtype) -> Tensor | None:
    b = getattr(_orig(linear), "bias", None)
    return b.detach().to(dtype) if b is not None else None


def _w(linear, dtype: torch.dtype) -> Tensor:
    return _orig(linear).weight.detach().to(dtype)


@dataclass(frozen=True)
class LayerWeights:
    """One block's weights in the orientation of `torch.nn.Linear` (out x in)."""

    ln_attn: NormWeights
    W_v: Float[Tensor, "kvd d_model"]
    b_v: Tensor | None
    W_o: Float[Tensor, "d_model hd"]
    b_o: Tensor | None
    post_attn: NormWeights | None
    ln_ffn: NormWeights
    W_gate: Float[Tensor, "d_mlp d_model"]
    b_gate: Tensor | None
    W_up: Float[Tensor, "d_mlp d_model"]
    b_up: Tensor | None
    W_down: Float[Tensor, "d_model d_mlp"]
    b_down: Tensor | None
    post_ffn: NormWeights | None
    act: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ModelWeights:
    """All blocks plus embedding, final norm and unembedding; see the module docstring."""

    layers: tuple[LayerWeights, ...]
    W_E: Float[Tensor, "d_vocab d_model"]
    embed_scale: float
    ln_final: NormWeights
    W_U: Float[Tensor, "d_vocab d_model"]
    b_U: Tensor | None
    softcap: float | None
    n_heads: int
    n_kv_heads: int
    d_head: int
    n_ctx: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_mlp(self) -> int:
        return int(self.layers[0].W_down.shape[1])


def copy_bytes(session: Session, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the `dtype` copies `model_weights` makes: every weight it reads (all but the
    attention's Q and K) not already in `dtype`, tied embeddings once."""
    n = 0
    for name, p in session.hf_model.named_parameters(remove_duplicate=True):
        if p.dtype != dtype and not any(k in name for k in ("q_proj", "k_proj", "q_norm", "k_norm")):
            n += p.numel()
    return n * torch.empty((), dtype=dtype).element_size()


def _check_room(session: Session, dtype: torch.dtype) -> None:
    """The memory plan of the frozen model: its copies must fit in what the device has left
    (one clear error before any is made, not an out-of-memory error midway)."""
    from ..memplan import OutOfMemory, free_bytes

    need = copy_bytes(session, dtype)
    if need == 0:
        return
    free = free_bytes(session.device)
    if need > free:
        raise OutOfMemory(f"the attribution graph's frozen model needs {need / 2**30:.1f} GiB of {dtype} "
                          f"weight copies; {free / 2**30:.1f} GiB is free on {session.device} (valid: at "
                          f"most the free memory; free other sessions or use a larger device)")


def model_weights(session: Session, dtype: torch.dtype = torch.float32) -> ModelWeights:
    """Read `session`'s weights for the frozen model (raises UnsupportedModelError).

    Weights already in `dtype` are views; others (bf16 / fp16 sessions) are float32 copies, so
    attribution always runs in float32.
    """
    hf = session.hf_model
    if not session.gated:
        raise UnsupportedModelError(f"model {session.name!r} has a plain (ungated) MLP; the FFN-unit "
                                    "graph is written for gated MLPs (act(x.g) * (x.u))")
    base = _orig(hf.model) if hasattr(hf, "model") else None
    if base is None or not hasattr(base, "layers"):
        raise UnsupportedModelError(f"model {session.name!r} ({type(hf).__name__}) has no model.layers")
    _check_room(session, dtype)
    d = session.d_model
    layers = []
    for block in base.layers:
        blk = _orig(block)
        attn, mlp = _orig(blk.self_attn), _orig(blk.mlp)
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            raise UnsupportedModelError(f"MLP {type(mlp).__name__} lacks gate_proj/up_proj/down_proj/act_fn")
        gemma = hasattr(blk, "pre_feedforward_layernorm")
        layers.append(LayerWeights(
            ln_attn=_norm(blk.input_layernorm, d, dtype),
            W_v=_w(attn.v_proj, dtype), b_v=_bias(attn.v_proj, dtype),
            W_o=_w(attn.o_proj, dtype), b_o=_bias(attn.o_proj, dtype),
            post_attn=_norm(blk.post_attention_layernorm, d, dtype) if gemma else None,
            ln_ffn=_norm(blk.pre_feedforward_layernorm if gemma else blk.post_attention_layernorm, d, dtype),
            W_gate=_w(mlp.gate_proj, dtype), b_gate=_bias(mlp.gate_proj, dtype),
            W_up=_w(mlp.up_proj, dtype), b_up=_bias(mlp.up_proj, dtype),
            W_down=_w(mlp.down_proj, dtype), b_down=_bias(mlp.down_proj, dtype),
            post_ffn=_norm(blk.post_feedforward_layernorm, d, dtype) if gemma else None,
            act=_orig(mlp.act_fn),
        ))
    emb = _orig(base.embed_tokens)
    scale = getattr(emb, "scalar_embed_scale", None)
    if scale is None:
        es = getattr(emb, "embed_scale", None)
        scale = float(es) if es is not None else 1.0
    head = _orig(hf.lm_head)
    cfg = hf.config
    n_heads = int(cfg.num_attention_heads)
    W_E = emb.weight.detach().to(dtype)
    tied = head.weight.data_ptr() == emb.weight.data_ptr() and head.weight.shape == emb.weight.shape
    W_U = W_E if tied else head.weight.detach().to(dtype)  # tied: one copy (4 GiB at Gemma-3-12B)
    return ModelWeights(
        layers=tuple(layers), W_E=W_E, embed_scale=float(scale),
        ln_final=_norm(base.norm, d, dtype), W_U=W_U, b_U=_bias(hf.lm_head, dtype),
        softcap=getattr(cfg, "final_logit_softcapping", None),
        n_heads=n_heads, n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or n_heads),
        d_head=int(getattr(cfg, "head_dim", None) or d // n_heads),
        n_ctx=int(getattr(cfg, "max_position_embeddings", 0) or 0),
    )
