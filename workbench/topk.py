"""Streaming per-unit top-k: keep, for each of U units, the k largest values seen and their ids.

Used by SAE feature harvests (top-activating tokens per latent) and usable by any harvest over
a corpus (FFN memories' top-triggering prefixes): feed [n U] value blocks with [n] integer ids
(e.g. corpus stream offsets); memory stays O(U k).

Example:
    >>> tk = StreamingTopK(n_units=3, k=2)
    >>> tk.update(torch.tensor([[1., 5, 0], [2, 4, 9]]), torch.tensor([10, 11]))
    >>> tk.values, tk.ids            # per unit, best first
"""

from __future__ import annotations

import torch

from ._types import Float, Int, Tensor
from .errors import ShapeError

__all__ = ["StreamingTopK"]


class StreamingTopK:
    """Running top-k per unit. `values` [U k] (descending, -inf where unfilled), `ids` [U k]."""

    def __init__(self, n_units: int, k: int, device: str | torch.device = "cpu"):
        if n_units < 1 or k < 1:
            raise ShapeError(f"n_units={n_units} and k={k} must be >= 1")
        self.k = int(k)
        self.values = torch.full((n_units, k), float("-inf"), device=device)
        self.ids = torch.full((n_units, k), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, values: Float[Tensor, "n units"], ids: Int[Tensor, " n"]) -> None:
        """Merge a block of values (row j has id ids[j]) into the running top-k."""
        if values.dim() != 2 or values.shape[1] != self.values.shape[0] or len(ids) != len(values):
            raise ShapeError(f"values {tuple(values.shape)} / ids {tuple(ids.shape)} do not fit "
                             f"[n {self.values.shape[0]}] / [n]")
        if len(values) == 0:
            return
        kk = min(self.k, len(values))
        v, i = values.to(self.values.device, self.values.dtype).topk(kk, dim=0)  # [kk U]
        cand_v = torch.cat([self.values, v.T], 1)
        cand_i = torch.cat([self.ids, ids.to(self.ids.device)[i].T], 1)
        top_v, pos = cand_v.topk(self.k, dim=1)
        self.values, self.ids = top_v, cand_i.gather(1, pos)
