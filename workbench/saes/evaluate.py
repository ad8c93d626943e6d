"""Evaluate an SAE on held-out corpus windows: reconstruction metrics and splice-in CE.

The windows are the first ones of the seeded random order that `train_sae` holds out (same
`window` and `seed` give the same held-out set), so training and evaluation never overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..capture import capture_tokens
from ..session import Session, TokenBatch
from .metrics import ReconstructionMetrics, SpliceMetrics, reconstruction_metrics, splice_metrics
from .sites import check_sae_site, to_vectors
from .stream import window_order

__all__ = ["SAEEvaluation", "evaluate_sae"]


@dataclass(frozen=True)
class SAEEvaluation:
    reconstruction: ReconstructionMetrics
    splice: SpliceMetrics | None

    def to_dict(self) -> dict:
        return {"reconstruction": self.reconstruction.to_dict(),
                "splice": self.splice.to_dict() if self.splice else None}


@torch.no_grad()
def evaluate_sae(session: Session, sae, corpus, max_tokens: int = 8192, window: int = 128, seed: int = 0,
                 rows_per_forward: int = 8, splice: bool = True) -> SAEEvaluation:
    """Metrics of `sae` on the held-out windows (see module doc)."""
    site = check_sae_site(session, sae)
    per = window - int(sae.cfg.skip_first_position)
    n_win = max(1, math.ceil(max_tokens / per))
    starts = window_order(corpus, session, window, seed)[:n_win]
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    width = window - int(bos)
    batches, vecs = [], []
    for i in range(0, len(starts), rows_per_forward):
        st = starts[i:i + rows_per_forward]
        tok = corpus.ids[st[:, None] + torch.arange(width)[None, :]]
        if bos:
            tok = torch.cat([torch.full((len(st), 1), session.tokenizer.bos_token_id), tok], 1)
        tok = tok.to(session.device)
        batches.append(tok)
        act = to_vectors(capture_tokens(session, TokenBatch(tok, torch.full((len(st),), tok.shape[1])),
                                        [site])[site], site, sae.cfg.head)
        if sae.cfg.skip_first_position:
            act = act[:, 1:]
        vecs.append(act.reshape(-1, act.shape[-1]).float())
    rec = reconstruction_metrics(sae, torch.cat(vecs))
    spl = splice_metrics(session, sae, batches) if splice and not site.derived else None
    return SAEEvaluation(rec, spl)
