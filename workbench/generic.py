"""The capture result and the generic capture path (through the TransformerBridge's hooks).

`Capture` is what every capture path returns. `generic_capture` reads any site, with any
intervention, and logits when asked: it hooks only the requested sites and stops the forward
after the last layer needed, so internal-site captures never compute the unembedding (the
last block ends the run by raising from its residual hook). `workbench.capture` chooses
between this path and the fast paths of `workbench.fastpath`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._types import Bool, Float, Tensor
from .errors import WorkbenchError
from .hooks import Intervention, Site, head_outputs, intervene, parse_site
from .session import Session, TokenBatch

__all__ = ["Capture", "generic_capture"]


@dataclass
class Capture:
    """Activations of one batch, by site, with the tokens each row holds.

    Args:
        batch: the right-padded tokens (`batch.mask` marks real tokens; `batch.str_tokens`
            says which token each position is).
        acts: site -> tensor with the site's dims (see `workbench.hooks`), on the model's device.
        logits: [batch pos d_vocab] when asked for, else None.
        path: which path computed it: ``generic`` (bridge hooks), ``eager`` (pure HF trunk),
            ``graph`` (CUDA-graph replay) or ``compiled`` (torch.compile of the pure trunk).
    """

    batch: TokenBatch
    acts: dict[Site, Tensor] = field(default_factory=dict)
    logits: Float[Tensor, "batch pos d_vocab"] | None = None
    path: str = "generic"

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

    def need_logits(self) -> Float[Tensor, "batch pos d_vocab"]:
        """`logits` of a capture run with ``logits=True`` (WorkbenchError when it holds none)."""
        if self.logits is None:
            raise WorkbenchError("this capture holds no logits; capture with logits=True")
        return self.logits

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
        return Capture(self.batch, acts, logits, self.path)

    def cpu(self) -> Capture:
        return self.to("cpu")


class _Stop(Exception):
    """Raised by the last needed block's residual hook: nothing after it is computed."""


@torch.no_grad()
def generic_capture(session: Session, batch: TokenBatch, wanted: Sequence[Site], *,
                    logits: bool = False, interventions: Sequence[Intervention] = ()) -> Capture:
    """Capture `wanted` (checked sites) through the bridge's hooks; see the module docstring."""
    if not wanted and not logits:
        raise ValueError("capture needs at least one site, or logits=True")
    store: dict[str, Tensor] = {}

    def saver(name: str):
        def fn(act: Tensor, hook=None) -> None:
            store[name] = act.detach()

        return fn

    def stopper(act: Tensor, hook=None) -> None:
        raise _Stop

    hook_names = sorted({s.hook_name for s in wanted})
    fwd = [(name, saver(name)) for name in hook_names]
    stop = None
    if not logits:
        last = max(s.layer for s in wanted)
        stop = last + 1
        if stop >= session.n_layers:  # no block to stop at: end the run after the last one
            fwd.append((f"blocks.{last}.hook_resid_post", stopper))
    out = None
    with intervene(session, *interventions), session.hooks(fwd):
        if stop is None:
            out = session.model(batch.tokens, return_type="logits")
        elif stop < session.n_layers:
            session.model(batch.tokens, stop_at_layer=stop)
        else:
            try:
                session.model(batch.tokens, return_type="logits")
            except _Stop:
                pass
    acts: dict[Site, Tensor] = {}
    for s in wanted:
        t = store[s.hook_name]
        if s.kind == "head_out":
            t = head_outputs(session, s.layer, t)
        acts[s] = t
    return Capture(batch, acts, out, "generic")
