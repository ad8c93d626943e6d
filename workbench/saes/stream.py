"""Activations streamed from a corpus: shuffled windows, one forward per chunk, nothing on disk.

Windows are visited in a seeded random order (so a short run sees every file of a corpus
directory), captured with `capture_tokens` (the fastest path that gives the same values; the
forward stops after the SAE's layer), and yielded as flat [n d_in] float32 chunks on the
session's device. The rows per forward follow the memory plan (`workbench.memplan`: at most
`tokens_per_forward`, fewer when the device lacks room) and halve on an out-of-memory error.

`prefetched` runs such a stream in a background thread, on a CUDA stream of its own on the GPU,
so the model's forward for the next chunks overlaps the consumer's work on the current ones
(the SAE's optimiser step): the same chunks in the same order, only earlier.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import torch

from .._types import Float, Tensor
from ..capture import capture_tokens
from ..errors import CorpusError
from ..memplan import plan_batch
from ..session import Session, TokenBatch
from .sites import to_vectors

__all__ = ["window_order", "stream_vectors", "prefetched"]


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


_DONE = object()


def prefetched(chunks: Iterator[Tensor], depth: int, device: torch.device | None = None) -> Iterator[Tensor]:
    """Yield `chunks` as they come, computed up to `depth` chunks ahead by a background thread.

    On CUDA the thread runs on a side stream; each chunk is handed over with an event the
    consumer's stream waits on (and `record_stream`, so the allocator does not reuse its memory
    early). An exception in the producer (out of memory past the halving, a corpus error) is
    raised in the consumer; closing the generator (a loop that breaks, an exception in the
    consumer) stops the producer and joins its thread. `depth` 0: no thread, `chunks` as is.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth {depth} must be >= 0")
    if depth == 0:
        yield from chunks
        return
    cuda = device is not None and device.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    side = torch.cuda.Stream(device) if cuda else None

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                for ch in chunks:
                    ev = None
                    if side is not None:
                        ev = torch.cuda.Event()
                        ev.record(side)
                    if not put((ch, ev)):
                        return
            put((_DONE, None))
        except BaseException as e:          # handed to the consumer, raised there
            put((e, None))

    thread = threading.Thread(target=work, name="activation-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, ev = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            if ev is not None:
                cur = torch.cuda.current_stream(device)
                cur.wait_event(ev)
                item.record_stream(cur)
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
