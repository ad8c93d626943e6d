"""Capture activations at chosen sites, batched with right padding, kept on the device.

Only the requested sites are hooked, and the forward pass stops after the last layer needed
(no unembedding) unless logits are asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ._types import Bool, Float, Int, Tensor
from .hooks import Intervention, Site, head_outputs, intervene, parse_site
from .session import Session, TokenBatch

__all__ = ["Capture", "capture", "capture_tokens"]


@dataclass
class Capture:
    """Activations of one batch, by site, with the tokens each row holds.

    Args:
        batch: the right-padded tokens (`batch.mask` marks real tokens; `batch.str_tokens`
            says which token each position is).
        acts: site -> tensor with the site's dims (see `workbench.hooks`), on the model's device.
        logits: [batch pos d_vocab] when asked for, else None.
    """

    batch: TokenBatch
    acts: dict[Site, Tensor] = field(default_factory=dict)
    logits: Float[Tensor, "batch pos d_vocab"] | None = None

    def __getitem__(self, key: Site | str | tuple[str, int]) -> Tensor:
        s = parse_site(key)
        if s not in self.acts:
            have = ", ".join(str(k) for k in self.acts)
            raise KeyError(f"site {s} was not captured; captured sites: {have}")
        return self.acts[s]

    def __contains__(self, key) -> bool:
        return parse_site(key) in self.acts

    @property
    def mask(self) -> Bool[Tensor, "batch pos"]:
        return self.batch.mask

    def row(self, key, i: int) -> Tensor:
        """Row `i` of a site without padding: [len_i, ...] (patterns: [head len_i len_i])."""
        s, n = parse_site(key), int(self.batch.lengths[i])
        t = self[s][i]
        if s.kind == "attn_pattern":
            return t[:, :n, :n]
        return t[:n]

    def flat(self, key) -> Float[Tensor, "n ..."]:
        """Real tokens of every row stacked: [n_tokens, ...] (not for attention patterns)."""
        s = parse_site(key)
        if s.kind == "attn_pattern":
            raise ValueError("flat() is for per-token sites; use row() for attention patterns")
        return self[s][self.mask]

    def to(self, device: str | torch.device) -> Capture:
        acts = {k: v.to(device) for k, v in self.acts.items()}
        logits = self.logits.to(device) if self.logits is not None else None
        return Capture(self.batch, acts, logits)

    def cpu(self) -> Capture:
        return self.to("cpu")


def capture(session: Session, prompts: str | Sequence[str] | TokenBatch,
            sites: Iterable[Site | str | tuple[str, int]], *, logits: bool = False,
            interventions: Sequence[Intervention] = (), backend: str = "generic") -> Capture:
    """Run `prompts` once and keep the activations at `sites` (and the logits if asked).

    Example:
        >>> cap = capture(s, ["Hello world", "Hi"], ["mlp_post:3", "resid_post:3"])
        >>> cap["mlp_post:3"].shape        # [2, pos, d_mlp]
    """
    batch = prompts if isinstance(prompts, TokenBatch) else session.tokenize(prompts)
    return capture_tokens(session, batch, sites, logits=logits, interventions=interventions,
                          backend=backend)


@torch.no_grad()
def capture_tokens(session: Session, batch: TokenBatch, sites: Iterable[Site | str | tuple[str, int]],
                   *, logits: bool = False, interventions: Sequence[Intervention] = (),
                   backend: str = "generic") -> Capture:
    """`capture` for an already-tokenized batch (the hot path of corpus streaming).

    `backend`: ``generic`` (default, through the bridge), or the opt-in fast paths of
    `workbench.fastpath`: ``graph`` (CUDA-graph replay, interactive) or ``compiled``
    (torch.compile, chunked, for large batches); both give the same values and use the
    generic path for logits, interventions and sites they do not support.
    """
    if backend != "generic":
        from .fastpath import check_backend, fast_capture

        check_backend(backend)
        if not logits and not interventions:
            return fast_capture(session, batch, [parse_site(s) for s in sites], backend)
    wanted = [parse_site(s).check(session) for s in sites]
    if not wanted and not logits:
        raise ValueError("capture needs at least one site, or logits=True")
    store: dict[str, Tensor] = {}

    def saver(name: str):
        def fn(act: Tensor, hook=None) -> None:
            store[name] = act.detach()

        return fn

    hook_names = sorted({s.hook_name for s in wanted})
    fwd = [(name, saver(name)) for name in hook_names]
    stop = None
    if not logits and wanted:
        last = max(s.layer for s in wanted)
        stop = last + 1 if last + 1 < session.n_layers else None
    with intervene(session, *interventions), session.hooks(fwd):
        if stop is None:
            out = session.model(batch.tokens, return_type="logits")
        else:
            out = None
            session.model(batch.tokens, stop_at_layer=stop)
    acts: dict[Site, Tensor] = {}
    for s in wanted:
        t = store[s.hook_name]
        if s.kind == "head_out":
            t = head_outputs(session, s.layer, t)
        acts[s] = t
    return Capture(batch, acts, out if logits else None)


def token_index(batch: TokenBatch) -> Int[Tensor, "n 2"]:
    """(row, position) of each real token, in the order `Capture.flat` returns them."""
    return batch.mask.nonzero()
