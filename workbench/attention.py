"""Attention summaries of one prompt: every head's pattern and the size of what each head writes.

    pattern[l, h, q, k] = softmax(q_h(x_q) . k_h(x_k) / sqrt(d_head))   (rows sum to 1)
    head_norm[l, q, h]  = || z_h(q) W_O[h] ||_2                       (the head's write at q)

Arrays come back as numpy on the CPU (they are drawn, not differentiated); nothing in the
result holds a reference to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .capture import capture
from .errors import PositionOutOfRange
from .session import Session

__all__ = ["AttentionResult", "attention_summary", "MAX_ATTENTION_TOKENS"]

MAX_ATTENTION_TOKENS = 256


@dataclass(frozen=True)
class AttentionResult:
    """Attention patterns and per-head output sizes of one prompt.

    Args:
        prompt: the input text.
        str_tokens: [pos] the token strings.
        patterns: [layer head qpos kpos] attention probabilities (rows sum to 1).
        head_norms: [layer pos head] ||z_h W_O[h]||_2, the size of each head's write per token.
        layers: which model layers the first axis holds.
    """

    prompt: str
    str_tokens: tuple[str, ...]
    patterns: np.ndarray
    head_norms: np.ndarray
    layers: tuple[int, ...]

    @property
    def n_heads(self) -> int:
        return int(self.patterns.shape[1])


@torch.no_grad()
def attention_summary(session: Session, prompt: str, layers: Sequence[int] | None = None,
                      max_tokens: int = MAX_ATTENTION_TOKENS) -> AttentionResult:
    """Patterns [layer head q k] and head-output norms [layer pos head] of one prompt.

    Prompts over `max_tokens` are refused: all patterns of a long prompt grow as pos^2.
    """
    s = session
    layers = tuple(range(s.n_layers)) if layers is None else tuple(s.check_layer(i) for i in layers)
    batch = s.tokenize(prompt)
    n = int(batch.lengths[0])
    if n > max_tokens:
        raise PositionOutOfRange(f"prompt has {n} tokens; the attention summary takes at most "
                                 f"{max_tokens}")
    sites = [f"attn_pattern:{i}" for i in layers] + [f"head_out:{i}" for i in layers]
    cap = capture(s, batch, sites)
    pats = np.stack([cap.row(f"attn_pattern:{i}", 0).float().cpu().numpy() for i in layers])
    norms = np.stack([torch.linalg.vector_norm(cap.row(f"head_out:{i}", 0).float(), dim=-1)
                      .cpu().numpy() for i in layers])
    return AttentionResult(prompt, tuple(batch.str_tokens[0]), pats, norms, layers)
