"""The key-value view of an FFN (Geva et al. 2021), for plain and gated MLPs.

    FFN(x) = sum_i m_i(x) v_i (+ b_out)

keys: the input weights. A plain MLP has one key k_i per unit and m_i = act(x . k_i + b_i); a
gated MLP has a gate key g_i and an up key u_i with m_i = act(x . g_i) * (x . u_i).
coefficients m_i: the post-activation hidden units (site ``mlp_post``), read on the
normalised FFN input x (site ``mlp_in``).
values v_i: row i of W_out [d_mlp, d_model] (site ``mlp_out`` is their weighted sum).
On Gemma the residual then receives post_feedforward_layernorm(FFN(x)); the identity above is
for the raw FFN output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._types import Float, Tensor
from .session import Session

__all__ = ["FFNWeights", "ffn_weights", "ffn_output"]


@dataclass(frozen=True)
class FFNWeights:
    """Views (no copies) of one layer's FFN weights in the key-value reading.

    Args:
        layer: the block.
        keys: [d_mlp d_model] the up (or sole) input key of each unit.
        gate_keys: [d_mlp d_model] the gate key of each unit (gated MLPs), else None.
        values: [d_mlp d_model] row i is v_i, a view of the model's W_out.
        bias_in: [d_mlp] or None.
        bias_out: [d_model] or None.
    """

    layer: int
    keys: Float[Tensor, "d_mlp d_model"]
    gate_keys: Float[Tensor, "d_mlp d_model"] | None
    values: Float[Tensor, "d_mlp d_model"]
    bias_in: Float[Tensor, " d_mlp"] | None
    bias_out: Float[Tensor, " d_model"] | None


def _maybe(fn):
    try:
        return fn()
    except (AttributeError, KeyError, NotImplementedError, RuntimeError, ValueError):
        return None


def ffn_weights(session: Session, layer: int) -> FFNWeights:
    """Keys, values and biases of `layer`'s FFN as views of the live weights."""
    session.check_layer(layer)
    mlp = session.model.blocks[layer].mlp
    W_in = mlp.W_in                      # [d_model d_mlp]
    W_gate = _maybe(lambda: mlp.W_gate)  # gated MLPs only
    W_out = mlp.W_out                    # [d_mlp d_model], a view of the HF weight
    return FFNWeights(
        layer=layer,
        keys=W_in.T,
        gate_keys=W_gate.T if W_gate is not None else None,
        values=W_out,
        bias_in=_maybe(lambda: mlp.b_in),
        bias_out=_maybe(lambda: mlp.b_out),
    )


def ffn_output(coefficients: Float[Tensor, "... d_mlp"], w: FFNWeights) -> Float[Tensor, "... d_model"]:
    """sum_i m_i v_i (+ b_out): the FFN output rebuilt from its coefficients and values."""
    out = coefficients.to(w.values.dtype) @ w.values
    if w.bias_out is not None:
        out = out + w.bias_out
    return out


def sub_updates(coefficients: Float[Tensor, " d_mlp"], w: FFNWeights) -> Float[Tensor, "d_mlp d_model"]:
    """The FFN update split into its sub-updates m_i v_i (one row per unit)."""
    return coefficients.to(w.values.dtype)[:, None] * w.values


def value_norms(w: FFNWeights) -> Float[Tensor, " d_mlp"]:
    return torch.linalg.vector_norm(w.values, dim=-1)
