"""Memory plans for batch jobs: how many tokens per batch fit, from the model, sites and memory.

Every batch job (capture, the memory harvest, SAE activation streaming, key covariance) holds,
per token of a batch, the captured activations of its sites plus working memory: one layer's
live activations in the forward, and the job's own per-token buffers. With

    per_token = sum_sites width(site) * elem          (captured)
              + (8 d_model + 4 d_mlp) * elem * 1.5    (one layer's live activations)
              + extra                                 (the job's buffers, bytes per token)

and the memory the device still has (free + cached-but-unused on CUDA, available RAM on the
CPU) times `fraction`, the plan is

    tokens = min(requested, floor(fraction * free / per_token)), rounded down to whole windows.

The plan never changes what is computed, only how many tokens go into one batch; a job that
still runs out of memory halves the batch and retries (`halving`). Plans are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .errors import WorkbenchError
from .hooks import Site
from .session import Session

__all__ = ["MemoryPlan", "plan_batch", "free_bytes", "halving", "OutOfMemory"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class OutOfMemory(WorkbenchError):
    """Even the smallest batch (one window) ran out of memory."""


@dataclass(frozen=True)
class MemoryPlan:
    """The batch a job will use and why.

    Args:
        tokens_per_batch: tokens per batch (a multiple of `window`).
        requested: what the caller asked for (or the job's default).
        per_token_bytes: estimated bytes per token of a batch (captured + working + extra).
        free_bytes: memory available when planned; fraction: the share a batch may use.
        limited: True when the memory, not the request, set the batch.
    """

    tokens_per_batch: int
    requested: int
    per_token_bytes: int
    free_bytes: int
    fraction: float
    limited: bool

    def __post_init__(self):
        if self.tokens_per_batch < 1:
            raise WorkbenchError(f"tokens_per_batch={self.tokens_per_batch} must be >= 1")


def free_bytes(device: torch.device) -> int:
    """Memory a job may still use on `device`: on CUDA free + cached-but-unused, within the
    process's cap (`torch.cuda.set_per_process_memory_fraction`); on the CPU available RAM."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        avail = free + torch.cuda.memory_reserved(device) - allocated
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if get_fraction is not None:
            index = device.index if device.index is not None else torch.cuda.current_device()
            avail = min(avail, int(total * get_fraction(index)) - allocated)
        return int(max(avail, 0))
    import os

    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def per_token_bytes(session: Session, sites: Sequence[Site], extra: int = 0) -> int:
    """Estimated bytes per token of a batch (see the module docstring)."""
    elem = torch.finfo(session.dtype).bits // 8
    captured = 0
    for s in sites:
        if s.kind == "attn_pattern":
            raise WorkbenchError("attention patterns grow with the square of the window; plan them "
                                 "per row (fastpath.estimate_row_bytes), not per token")
        if s.kind == "head_out":
            captured += session.n_heads * (session.d_model + session.d_head) * elem
        elif s.kind == "attn_z":
            captured += session.n_heads * session.d_head * elem
        else:
            captured += s.width(session) * elem
    work = int(1.5 * (8 * session.d_model + 4 * session.d_mlp) * elem)
    return captured + work + int(extra)


def plan_batch(session: Session, sites: Sequence[Site], window: int, requested: int, *, extra: int = 0,
               fraction: float = 0.8, available: int | None = None) -> MemoryPlan:
    """Tokens per batch for a job capturing `sites` in windows of `window` tokens.

    Args:
        requested: the batch the caller asked for (an upper bound).
        extra: the job's own bytes per token (e.g. the harvest's stacked copies).
        fraction: the share of the available memory a batch may use.
        available: bytes available (default: `free_bytes` of the session's device).
    """
    if window < 1 or requested < 1:
        raise WorkbenchError(f"window={window} and requested={requested} must be >= 1")
    if not 0 < fraction <= 1:
        raise WorkbenchError(f"fraction={fraction} must be in (0, 1]")
    free = free_bytes(session.device) if available is None else int(available)
    per = per_token_bytes(session, sites, extra)
    fit = int(fraction * free) // max(per, 1)
    tokens = max(window, min(requested, fit) // window * window)
    plan = MemoryPlan(tokens, requested, per, free, fraction, fit < requested)
    if plan.limited:
        log.info("memory plan: %d tokens per batch (asked %d; %.1f MiB per token, %.1f GiB free)",
                 tokens, requested, per / 2**20, free / 2**30)
    return plan


def halving(run: Callable[[int, int], T], start: int, stop: int, rows: int) -> list[T]:
    """Run `run(i, j)` over [start, stop) in chunks of `rows`; on CUDA out-of-memory, halve.

    A failed chunk is retried in halves (down to one row; then `OutOfMemory`), and later
    chunks keep the smaller size. `run` must not have changed any state when it raises.
    """
    out: list[T] = []
    i = start
    while i < stop:
        j = min(stop, i + rows)
        try:
            out.append(run(i, j))
        except torch.OutOfMemoryError as exc:
            if j - i <= 1:
                raise OutOfMemory(f"one row ran out of memory ({exc}); use a shorter window or "
                                  "fewer sites") from exc
            rows = max(1, (j - i) // 2)
            log.warning("out of memory at %d rows; retrying with %d", j - i, rows)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        i = j
    return out
