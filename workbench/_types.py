"""Dimension glossary and tensor aliases used in signatures across the workbench.

Dimension names (one line each):
    batch   prompts (rows) in one forward pass
    pos     token positions in a row (right-padded; see ``TokenBatch.lengths``)
    qpos    query positions of an attention pattern
    kpos    key positions of an attention pattern
    layer   transformer blocks, 0..n_layers-1
    head    attention heads of one layer
    d_model residual stream width
    d_mlp   FFN hidden width: one key / coefficient / value per unit
    d_head  width of one attention head
    d_vocab vocabulary size
    d_sae   SAE latents
    k       a top-k dimension
    n       flattened valid tokens (rows x positions, padding removed)
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["Bool", "Float", "Int", "Tensor"]
