"""The one object that talks to the session for the widgets: runs analyses, returns results.

Views never touch the model; they hold a callback bound to a `Controller` method. All model
work goes through `Controller.lock`, so views working in threads never mix their hooks.

Example:
    >>> c = Controller(Session.load())
    >>> lens = c.prompt_lens("The Eiffel Tower is located in the city of")
    >>> subs = c.sub_updates(lens, layer=20, pos=-1)
    >>> lens2 = c.prompt_lens(lens.prompt, edits=[Edit(20, 11, subs.items[0].neuron, 0.0)])
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench import capture, ffn_weights, scale_neurons
from workbench.errors import EmptyPromptError, PositionOutOfRange

from ._base import Progress
from ._editing_ctl import EditingMixin
from ._memory_ctl import MemoryMixin
from ._sae_ctl import SaeMixin
from .results import AttentionResult, Edit, PromptLens, SubUpdate, SubUpdates

log = logging.getLogger(__name__)

__all__ = ["Controller", "MAX_ATTENTION_TOKENS"]

MAX_ATTENTION_TOKENS = 256


@dataclass
class _LensCache:
    """Unedited run of one prompt: residuals per layer, their lens, the next-token probs."""

    batch: object
    resid: torch.Tensor          # [layer pos d_model]
    top_ids: torch.Tensor        # [layer pos]
    top_probs: torch.Tensor      # [layer pos]
    next_probs: torch.Tensor     # [d_vocab]


class Controller(EditingMixin, SaeMixin, MemoryMixin):
    """Recomputes results for the views on one session (thread-safe through `lock`).

    Args:
        session: the `workbench.Session` all views share.
        top_k: how many next tokens / promoted tokens the views list.
        corpus: a `Corpus` or path for key statistics and noise scale (default: the project's
            small corpus).
    """

    def __init__(self, session, top_k: int = 10, corpus=None):
        self.session = session
        self.corpus = corpus
        self.edit_handles: list = []
        self.top_k = int(top_k)
        self.lock = threading.RLock()
        self._lens: dict[str, _LensCache] = {}
        self.history: list[object] = []  # results computed, newest last (for session export)

    def _remember(self, result):
        self.history.append(result)
        del self.history[:-50]
        return result

    # ------------------------------------------------------------------ attention
    def attention(self, prompt: str, layers: Sequence[int] | None = None,
                  progress: Progress | None = None) -> AttentionResult:
        """Patterns [layer head q k] and head-output norms [layer pos head] of one prompt."""
        s = self.session
        layers = tuple(range(s.n_layers)) if layers is None else tuple(s.check_layer(i) for i in layers)
        batch = s.tokenize(prompt)
        n = int(batch.lengths[0])
        if n > MAX_ATTENTION_TOKENS:
            raise PositionOutOfRange(f"prompt has {n} tokens; the attention view takes at most "
                                     f"{MAX_ATTENTION_TOKENS}")
        sites = [f"attn_pattern:{i}" for i in layers] + [f"head_out:{i}" for i in layers]
        with self.lock:
            cap = capture(s, batch, sites)
        if progress:
            progress(0.8, "attention captured")
        pats = np.stack([cap.row(f"attn_pattern:{i}", 0).float().cpu().numpy() for i in layers])
        norms = np.stack([torch.linalg.vector_norm(cap.row(f"head_out:{i}", 0).float(), dim=-1)
                          .cpu().numpy() for i in layers])
        return self._remember(AttentionResult(prompt, tuple(batch.str_tokens[0]), pats, norms, layers))

    # ------------------------------------------------------------------ prompt lens
    def _lens_of(self, resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-1 id and probability of the logit lens of residual vectors [... d_model]."""
        logp = torch.log_softmax(self.session.unembed(resid).float(), -1)
        top = logp.max(-1)
        return top.indices, top.values.exp()

    def _base(self, prompt: str) -> _LensCache:
        if prompt in self._lens:
            return self._lens[prompt]
        s = self.session
        batch = s.tokenize(prompt)
        sites = [f"resid_post:{i}" for i in range(s.n_layers)]
        with self.lock, torch.no_grad():
            cap = capture(s, batch, sites, logits=True)
            resid = torch.stack([cap[f"resid_post:{i}"][0] for i in range(s.n_layers)])
            ids, probs = self._lens_of(resid)
            nxt = torch.softmax(cap.logits[0, -1].float(), -1)
        cache = _LensCache(batch, resid, ids, probs, nxt)
        self._lens = {prompt: cache}  # keep one prompt: residuals of long prompts add up
        return cache

    def prompt_lens(self, prompt: str, edits: Iterable[Edit] = (),
                    progress: Progress | None = None) -> PromptLens:
        """Logit lens and next-token distribution of `prompt` with FFN units scaled by `edits`.

        Only lens cells whose residual the edits changed are unembedded again, so a change at
        the last token costs one forward pass plus at most n_layers unembeddings.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise EmptyPromptError(f"prompt={prompt!r} is empty; type a prompt")
        s = self.session
        base = self._base(prompt)
        edits = tuple(sorted(set(edits)))
        n = int(base.batch.lengths[0])
        for e in edits:
            s.check_neuron(e.layer, e.neuron)
            if not 0 <= e.pos < n:
                raise PositionOutOfRange(f"pos={e.pos} is out of range; the prompt has {n} tokens "
                                         f"(0..{n - 1})")
        ids, probs, nxt = base.top_ids, base.top_probs, base.next_probs
        if edits:
            ivs = [scale_neurons(layer, list(units), f, positions=[pos])
                   for (layer, pos, f), units in _group(edits).items()]
            first = min(e.layer for e in edits)
            sites = [f"resid_post:{i}" for i in range(first, s.n_layers)]
            with self.lock, torch.no_grad():
                cap = capture(s, base.batch, sites, logits=True, interventions=ivs)
                resid = torch.stack([cap[f"resid_post:{i}"][0] for i in range(first, s.n_layers)])
                changed = (resid != base.resid[first:]).any(-1)       # [layer' pos]
                ids, probs = base.top_ids.clone(), base.top_probs.clone()
                if changed.any():
                    ci, cp = self._lens_of(resid[changed])
                    ids[first:][changed], probs[first:][changed] = ci, cp
                nxt = torch.softmax(cap.logits[0, -1].float(), -1)
        top = nxt.topk(self.top_k)
        tok = s.tokenizer
        strs = tuple(tuple(tok.decode([int(i)]) for i in row) for row in ids.tolist())
        return self._remember(PromptLens(
            prompt=prompt, str_tokens=tuple(base.batch.str_tokens[0]),
            top_ids=ids.cpu().numpy(), top_probs=probs.cpu().numpy(), top_strs=strs,
            next_ids=top.indices.cpu().numpy(), next_probs=top.values.cpu().numpy(),
            next_strs=tuple(tok.decode([int(i)]) for i in top.indices.tolist()),
            base_next_probs=base.next_probs[top.indices].cpu().numpy(), edits=edits,
        ))

    def sub_updates(self, lens: PromptLens, layer: int, pos: int, k: int | None = None) -> SubUpdates:
        """The top-k FFN sub-updates m_i v_i of `layer` at token `pos` by |m_i| ||v_i||.

        Promoted tokens: the top of unembed(sign(m_i) v_i) (final norm, then W_U), the
        reading `workbench.vocab.value_tokens` uses.
        Coefficients are read under the lens's edits, so a zeroed unit shows m_i = 0.
        """
        s = self.session
        k = self.top_k if k is None else int(k)
        s.check_layer(layer)
        base = self._base(lens.prompt)
        n = int(base.batch.lengths[0])
        pos = pos + n if pos < 0 else pos
        if not 0 <= pos < n:
            raise PositionOutOfRange(f"pos={pos} is out of range; the prompt has {n} tokens (0..{n - 1})")
        ivs = [scale_neurons(ly, list(units), f, positions=[p])
               for (ly, p, f), units in _group(lens.edits).items()]
        with self.lock, torch.no_grad():
            cap = capture(s, base.batch, [f"mlp_post:{layer}"], interventions=ivs)
            m = cap[f"mlp_post:{layer}"][0, pos].float()
            w = ffn_weights(s, layer)
            norms = torch.linalg.vector_norm(w.values.float(), dim=-1)
            score = m.abs() * norms
            order = score.topk(min(k, score.numel())).indices
            # with zeroed units on the list, keep showing them so they can be restored
            zeroed = [e.neuron for e in lens.edits if e.layer == layer and e.pos == pos]
            picked = list(dict.fromkeys([*zeroed, *order.tolist()]))[: max(k, len(zeroed))]
            idx = torch.tensor(picked)
            # read each signed value in the vocabulary as workbench.vocab does: unembed(s_i v_i)
            sign = torch.where(m[idx] < 0, -1.0, 1.0)[:, None]
            proj = s.unembed(w.values[idx].float() * sign).float()  # [k d_vocab]
            up = proj.topk(5, -1).indices.tolist()
            down = (-proj).topk(5, -1).indices.tolist()
        dec = s.tokenizer.decode
        items = tuple(
            SubUpdate(neuron=int(i), coefficient=float(m[i]), norm=float(norms[i]),
                      promoted=tuple(dec([t]) for t in u), suppressed=tuple(dec([t]) for t in d))
            for i, u, d in zip(picked, up, down)
        )
        return SubUpdates(layer, pos, lens.str_tokens[pos], items)


def _group(edits: Iterable[Edit]) -> dict[tuple[int, int, float], list[int]]:
    out: dict[tuple[int, int, float], list[int]] = {}
    for e in edits:
        out.setdefault((e.layer, e.pos, float(e.factor)), []).append(e.neuron)
    return out
