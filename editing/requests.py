"""What an edit asks for and what it computes: `EditRequest` (a fact) and `RankOneUpdate`.

Kept apart from the method (`rome`) and the writer (`apply`) so that both import it and
neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench._types import Float, Tensor

__all__ = ["EditRequest", "RankOneUpdate", "LayerUpdate"]


@dataclass(frozen=True)
class EditRequest:
    """A fact to insert: `prompt` (contains `subject`, or ``{}`` for it) -> `target` (one or more tokens).

    Args:
        prompt: e.g. ``"The Eiffel Tower is located in"``.
        subject: e.g. ``"The Eiffel Tower"``.
        target: e.g. ``"Rome"`` (a leading space is added after a prompt that ends in a word).
    """

    prompt: str
    subject: str
    target: str


@dataclass(frozen=True)
class RankOneUpdate:
    """W_out' = W_out + outer(u, r) at `layer` (W_out is [d_mlp d_model], the TL layout).

    Args:
        layer: the edited block.
        u: [d_mlp] left vector, C^{-1} k* / (k*^T C^{-1} k*).
        r: [d_model] right vector, v* - (k* W_out + b_out).
        k_star: [d_mlp] the subject key; v_star: [d_model] its new value.
        request: the fact; target_id: its (first) token; target_ids: all its tokens.
        info: losses and timings of the optimisation.
    """

    layer: int
    u: Float[Tensor, " d_mlp"]
    r: Float[Tensor, " d_model"]
    k_star: Float[Tensor, " d_mlp"]
    v_star: Float[Tensor, " d_model"]
    request: EditRequest
    target_id: int
    info: dict = field(default_factory=dict, compare=False)
    target_ids: tuple[int, ...] = ()

    def delta(self) -> Float[Tensor, "d_mlp d_model"]:
        """The dense update u r^T (what `apply` adds to W_out)."""
        return torch.outer(self.u, self.r)


@dataclass(frozen=True)
class LayerUpdate:
    """W_out[l] += deltas[l] for every edited layer l: a MEMIT or AlphaEdit batch, or a replayed edit.

    Args:
        deltas: layer -> [d_mlp d_model] dense update in the TL layout of ``blocks[l].mlp.W_out``.
        requests: the facts the batch inserts (empty for a replayed raw delta).
        method: ``"memit"``, ``"alphaedit"``, ``"replay"``, ...
        keys: layer -> [n d_mlp] the requests' keys at that layer as the update saw them (what
            AlphaEdit adds to the preserved set; what the blast radius compares corpus keys with).
        info: losses, norms and timings.
    """

    deltas: dict[int, Tensor]
    requests: tuple[EditRequest, ...] = ()
    method: str = "memit"
    keys: dict[int, Tensor] = field(default_factory=dict, compare=False)
    info: dict = field(default_factory=dict, compare=False)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.deltas))

    def norms(self) -> dict[int, float]:
        """Frobenius norm of each layer's delta."""
        return {layer: float(self.deltas[layer].double().norm()) for layer in self.layers}
