"""Activations streamed from a corpus: shuffled windows, one forward per chunk, nothing on disk.

Windows are visited in a seeded random order (so a short run sees every file of a corpus
directory), captured with `capture_tokens` (the fastest path that gives the same values; the
forward stops after the SAE's layer), and yielded as flat [n d_in] float32 chunks on the
session's device. The rows per forward follow the memory plan (`workbench.memplan`: at most
`tokens_per_forward`, fewer when the device lacks room) and halve on an out-of-memory error.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .._types import Float, Tensor
from ..capture import capture_tokens
from ..errors import CorpusError
from ..memplan import plan_batch
from ..session import Session, TokenBatch
from .sites import to_vectors

__all__ = ["window_order", "stream_vectors"]


def window_order(corpus, session: Session, window: int, seed: int) -> Tensor:
    """Stream offsets of all windows, in a seeded random order."""
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    starts = corpus.window_starts(window, bos)
    g = torch.Generator().manual_seed(seed)
    return starts[torch.randperm(len(starts), generator=g)]


def stream_vectors(session: Session, corpus, site, head: int | None, starts: Tensor, window: int,
                   tokens_per_forward: int, skip_first: bool) -> Iterator[Float[Tensor, "n d_in"]]:
    """Yield [n d_in] activation chunks of the windows at `starts` (in that order)."""
    if len(starts) == 0:
        raise CorpusError("no corpus windows left to stream activations from")
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    width = window - int(bos)
    extra = 3 * 4 * site.width(session)          # the float32 chunk, its shuffle-buffer copy, a batch
    plan = plan_batch(session, [site], window, max(window, tokens_per_forward), extra=extra)
    rows = max(1, plan.tokens_per_batch // window)
    i = 0
    while i < len(starts):
        st = starts[i:i + rows]
        n_real = len(st)
        if n_real < rows and len(starts) > rows:
            # a short last batch is padded with windows already streamed (dropped below), so
            # every batch of a stream has one shape: compiled capture code is reused, not rebuilt
            st = torch.cat([st, starts[: rows - n_real]])
        tok = corpus.ids[st[:, None] + torch.arange(width)[None, :]]
        if bos:
            col = torch.full((len(st), 1), session.tokenizer.bos_token_id, dtype=torch.int64)
            tok = torch.cat([col, tok], 1)
        batch = TokenBatch(tok.to(session.device), torch.full((len(st),), tok.shape[1]))
        try:
            act = to_vectors(capture_tokens(session, batch, [site])[site], site, head)
        except torch.OutOfMemoryError:
            if rows == 1:
                raise
            rows //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        i += n_real
        act = act[:n_real]
        if skip_first:
            act = act[:, 1:]
        yield act.reshape(-1, act.shape[-1]).float()
