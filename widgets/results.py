"""View models: frozen results the controller builds for views that no analysis module owns.

Arrays are numpy on the CPU (views draw them); nothing here holds a reference to the model.
Dims: layer, head, pos (= qpos), kpos, k (top-k); see `workbench._types`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AttentionResult", "PromptLens", "SubUpdate", "SubUpdates", "Edit", "EditOutcome", "SteerOutcome",
           "MemoryRecord", "MemoryHits"]


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


@dataclass(frozen=True, order=True)
class Edit:
    """Scale FFN unit `neuron` of `layer` at token `pos` by `factor` (0 = zero, >1 = boost)."""

    layer: int
    pos: int
    neuron: int
    factor: float


@dataclass(frozen=True)
class PromptLens:
    """Logit lens of one prompt (tokens x layers) and its next-token distribution, under edits.

    The lens reads each layer's residual output with the model's final norm and unembedding
    (`Session.unembed`): p_l(t | x_<=i) = softmax(W_U norm(h_l,i))_t.

    Args:
        prompt: the text. str_tokens: [pos].
        top_ids, top_probs, top_strs: [layer pos] the lens's top-1 token at each cell.
        next_ids, next_probs, next_strs: [k] the top-k next tokens at the last position.
        base_next_probs: [k] the same tokens' probabilities without edits.
        edits: the FFN unit scalings in force.
    """

    prompt: str
    str_tokens: tuple[str, ...]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_strs: tuple[tuple[str, ...], ...]
    next_ids: np.ndarray
    next_probs: np.ndarray
    next_strs: tuple[str, ...]
    base_next_probs: np.ndarray
    edits: tuple[Edit, ...] = ()

    @property
    def n_layers(self) -> int:
        return int(self.top_probs.shape[0])

    @property
    def prediction(self) -> str:
        return self.next_strs[0]


@dataclass(frozen=True)
class SubUpdate:
    """One FFN sub-update m_i v_i at a (layer, pos): its size and the tokens it promotes.

    Promoted tokens are the top of unembed(sign(m_i) v_i): what adding m_i v_i pushes up.
    """

    neuron: int
    coefficient: float
    norm: float
    promoted: tuple[str, ...]
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class SubUpdates:
    """The largest sub-updates |m_i| * ||v_i|| of FFN `layer` at token `pos`."""

    layer: int
    pos: int
    token: str
    items: tuple[SubUpdate, ...]


@dataclass(frozen=True)
class EditOutcome:
    """A rank-one edit applied through the controller: what changed, and by how much.

    Args:
        prompt, subject, target: the request; layer: the edited FFN.
        answer: the model's top-1 answer before the edit.
        p_before, p_after: {"target": p, "answer": p} at the prompt's last token.
        top_before, top_after: [k] (token, p) next tokens before / after.
        gen_before, gen_after: greedy continuations of the prompt.
        delta_rel: ||u r^T||_F / ||W_out||_F.
        units: [k] (unit, |u_i| ||r||): the rows of W_out the update moves most.
        r_promotes: [k] tokens r (the value change) pushes up, read through W_U.
        active: whether the edit is still applied.
    """

    prompt: str
    subject: str
    target: str
    layer: int
    answer: str
    p_before: dict
    p_after: dict
    top_before: tuple[tuple[str, float], ...]
    top_after: tuple[tuple[str, float], ...]
    gen_before: str
    gen_after: str
    delta_rel: float
    units: tuple[tuple[int, float], ...]
    r_promotes: tuple[str, ...]
    active: bool = True


@dataclass(frozen=True)
class SteerOutcome:
    """The model with an SAE latent steered (code + amount) against the plain model.

    Args:
        prompt, feature, amount: what was steered, and by how much (added to the code, so
            amount * d_feature is added to the activation at every position).
        top_before, top_after: [k] (token, p) next tokens without / with steering.
        gen_before, gen_after: greedy continuations.
    """

    prompt: str
    feature: int
    amount: float
    top_before: tuple[tuple[str, float], ...]
    top_after: tuple[tuple[str, float], ...]
    gen_before: str
    gen_after: str


@dataclass(frozen=True)
class MemoryRecord:
    """One FFN memory (layer, neuron): its top trigger prefixes and what its value writes.

    Args:
        layer, neuron: the unit.
        examples: [k] `workbench.memories.MemoryExample` (prefix, trigger token, next token,
            coefficient), best first.
        promoted, suppressed: [k] (token, logit) of the value read through the unembedding.
        frequency: share of harvested tokens with m_i > 0; mean: mean m_i.
        n_tokens: tokens harvested.
    """

    layer: int
    neuron: int
    examples: tuple
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    value_norm: float
    frequency: float
    mean: float
    n_tokens: int


@dataclass(frozen=True)
class MemoryHits:
    """Units whose value most promotes `token` (logit of unembed(v_i) for that token)."""

    token: str
    hits: tuple[tuple[int, int, float], ...]   # (layer, neuron, logit), best first
