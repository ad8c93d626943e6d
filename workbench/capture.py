"""Capture activations at chosen sites, batched with right padding, kept on the device.

One call, `capture`, picks the fastest path that gives the same result and says which it used
(`Capture.path`):

- ``generic``: the TransformerBridge's hooks (`workbench.generic`); the only path for
  attention patterns, interventions, logits, active `session.hooks`, and any model whose
  Hugging Face layout the fast paths do not know.
- ``graph``: CUDA-graph replay of the pure HF trunk (small interactive requests on CUDA).
- ``compiled``: torch.compile of the pure HF trunk, chunked by the memory plan (CUDA batches
  of at least 4,096 tokens whose padded shape has been requested 8 times: a stream, which wins
  back the 10-60 s compile).
- ``eager``: the pure HF trunk without graph or compile (the CPU; CUDA requests in between).

The fast paths are `workbench.fastpath`; they run the same weights with SDPA attention and
agree with the generic path to float tolerance (tested on every supported site). Only the
requested sites are read, and the forward stops after the last layer needed (no unembedding)
unless logits are asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ._types import Int, Tensor
from .fastpath import choose_path, fast_capture
from .generic import Capture, generic_capture
from .hooks import Intervention, Site, parse_site
from .session import Session, TokenBatch

__all__ = ["Capture", "capture", "capture_tokens", "token_index"]


def capture(session: Session, prompts: str | Sequence[str] | TokenBatch,
            sites: Iterable[Site | str | tuple[str, int]], *, logits: bool = False,
            interventions: Sequence[Intervention] = (), backend: str = "auto") -> Capture:
    """Run `prompts` once and keep the activations at `sites` (and the logits if asked).

    Example:
        >>> cap = capture(s, ["Hello world", "Hi"], ["mlp_post:3", "resid_post:3"])
        >>> cap["mlp_post:3"].shape        # [2, pos, d_mlp]
        >>> cap.path                       # "eager" on the CPU, "graph" on CUDA
    """
    batch = prompts if isinstance(prompts, TokenBatch) else session.tokenize(prompts)
    return capture_tokens(session, batch, sites, logits=logits, interventions=interventions,
                          backend=backend)


@torch.no_grad()
def capture_tokens(session: Session, batch: TokenBatch, sites: Iterable[Site | str | tuple[str, int]],
                   *, logits: bool = False, interventions: Sequence[Intervention] = (),
                   backend: str = "auto") -> Capture:
    """`capture` for an already-tokenized batch (the hot path of corpus streaming).

    `backend`: ``auto`` (default: the path rule in the module docstring), or one of
    ``generic``, ``eager``, ``graph``, ``compiled`` to force it; a forced fast path still
    falls back to ``generic`` for what it cannot compute (see `fastpath.choose_path`).
    """
    wanted = [parse_site(s).check(session) for s in sites]
    path = choose_path(session, batch, wanted, logits=logits, interventions=interventions,
                       backend=backend)
    if path == "generic":
        return generic_capture(session, batch, wanted, logits=logits, interventions=interventions)
    return fast_capture(session, batch, wanted, path)


def token_index(batch: TokenBatch) -> Int[Tensor, "n 2"]:
    """(row, position) of each real token, in the order `Capture.flat` returns them."""
    return batch.mask.nonzero()
