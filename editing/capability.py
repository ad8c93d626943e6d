"""General capability around an edit: perplexity on held text, accuracy on known facts.

    perplexity = exp( -(1/N) sum_t log p(x_t | x_<t) )     over N predicted tokens of held text
    known-fact accuracy = share of (prompt, answer) pairs whose answer tokens are all the
                          model's greedy choice, teacher forced (one forward per batch)

Both run the session's pure HF view in the current state (edited or not); nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from workbench.errors import WorkbenchError
from workbench.session import Session

from ._prompts import target_ids

__all__ = ["perplexity", "known_accuracy", "held_windows"]


def held_windows(session: Session, corpus, n_tokens: int = 4096, window: int = 128, skip: int = 0) -> torch.Tensor:
    """[n window] token windows of held text from `corpus` (after `skip` tokens)."""
    ids = corpus.ids[skip : skip + n_tokens]
    n = len(ids) // window
    if n < 1:
        raise WorkbenchError(f"held text has {len(ids)} tokens; need at least window={window}")
    return ids[: n * window].reshape(n, window).long()


@torch.no_grad()
def perplexity(session: Session, windows: torch.Tensor, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) over `windows` [n pos] (no BOS added; every window's first
    token is context only)."""
    from ._hf import pure_lm

    hf = pure_lm(session)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = windows[i : i + batch_size].to(session.device)
        logits = hf(input_ids=x, use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                x[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    return math.exp(total / count)


@torch.no_grad()
def known_accuracy(session: Session, facts: Sequence[tuple[str, str]], batch_size: int = 64) -> float | None:
    """Percent of (prompt, answer) pairs the model completes greedily (every answer token)."""
    from ._hf import pure_lm

    if not facts:
        return None
    hf = pure_lm(session)
    hits = 0
    for i in range(0, len(facts), batch_size):
        rows = [(session.encode(p), list(target_ids(session, p, a))) for p, a in facts[i : i + batch_size]]
        width = max(len(a) + len(b) - 1 for a, b in rows)
        tokens = torch.full((len(rows), width), session.pad_id, dtype=torch.long)
        for j, (a, b) in enumerate(rows):
            seq = (a + b)[:-1]
            tokens[j, : len(seq)] = torch.tensor(seq)
        pred = hf(input_ids=tokens.to(session.device), use_cache=False).logits.argmax(-1).cpu()
        for j, (a, b) in enumerate(rows):
            got = pred[j, len(a) - 1 : len(a) - 1 + len(b)].tolist()
            hits += int(got == b)
    return 100.0 * hits / len(facts)
