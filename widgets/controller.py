"""The one object that talks to the session for the widgets: runs analyses, returns results.

Views never touch the model; they hold a callback bound to a `Controller` method. All model
work goes through `Controller.lock`, so views working in threads never mix their hooks.

Example:
    >>> c = Controller(Session.load())
    >>> lens = c.prompt_lens("The Eiffel Tower is located in the city of")
    >>> subs = c.sub_updates(lens, layer=20, pos=-1)
    >>> lens2 = c.prompt_lens(lens.prompt, edits=[UnitScale(20, 11, subs.by_magnitude[0].neuron, 0.0)])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from workbench.attention import MAX_ATTENTION_TOKENS, AttentionResult, attention_summary
from workbench.errors import WorkbenchError, choices
from workbench.lenses import LENS_KINDS
from workbench.prompt_lens import (
    LensBase,
    PromptLens,
    UnitScale,
    lens_base,
    prompt_lens,
    unit_interventions,
)
from workbench.session import Session
from workbench.vocab import SubUpdates, ffn_sub_updates

from ._base import Progress
from ._editing_ctl import EditingMixin
from ._ffmaps_ctl import FFMapsMixin
from ._graph_ctl import GraphMixin
from ._memory_ctl import MemoryMixin
from ._sae_ctl import SaeMixin

log = logging.getLogger(__name__)

__all__ = ["Controller", "MAX_ATTENTION_TOKENS"]


class Controller(EditingMixin, SaeMixin, MemoryMixin, GraphMixin, FFMapsMixin):
    """Calls the analyses for the views on one session, caches, and locks (thread-safe).

    The analyses (`workbench.prompt_lens`, `workbench.vocab`, `workbench.attention`,
    `workbench.memory_cards`, `workbench.saes.steering`, `editing.outcome`) compute; the
    controller keeps the caches (one prompt's unedited lens run, the corpus, the key statistics),
    the lock that keeps views in threads from mixing their hooks, and the results computed.

    Args:
        session: the `workbench.Session` all views share.
        top_k: how many next tokens / promoted tokens the views list.
        corpus: a `Corpus` or path for key statistics and noise scale (default: the project's
            small corpus).
    """

    def __init__(self, session: Session, top_k: int = 10, corpus=None):
        super().__init__(session, corpus)
        self.top_k = int(top_k)
        self._lens: dict[tuple[str, str], LensBase] = {}

    # ------------------------------------------------------------------ attention
    def attention(self, prompt: str, layers: Sequence[int] | None = None,
                  progress: Progress | None = None) -> AttentionResult:
        """`workbench.attention.attention_summary` of one prompt."""
        with self.lock:
            res = attention_summary(self.session, prompt, layers)
        if progress:
            progress(0.8, "attention captured")
        return self._remember(res)

    # ------------------------------------------------------------------ prompt lens
    def _base(self, prompt: str, kind: str) -> LensBase:
        if (prompt, kind) not in self._lens:
            reader = self.reader(kind)
            with self.lock:
                base = lens_base(self.session, prompt, reader)
            # keep one prompt (residuals of long prompts add up), under each lens asked for
            self._lens = {k: v for k, v in self._lens.items() if k[0] == prompt}
            self._lens[(prompt, kind)] = base
        return self._lens[(prompt, kind)]

    def prompt_lens(self, prompt: str, edits: Iterable[UnitScale] = (),
                    progress: Progress | None = None, lens: str = "logit") -> PromptLens:
        """`workbench.prompt_lens.prompt_lens` of `prompt` under FFN unit scalings `edits`, read
        through `lens` (logit, tuned or jacobian; the unedited run of the prompt is cached, so a
        redraw costs one partial forward)."""
        if lens not in LENS_KINDS:
            raise WorkbenchError(f"lens={lens!r} is unknown; choose one of {choices(LENS_KINDS)}")
        source: str | LensBase = (self._base(prompt, lens) if isinstance(prompt, str) and prompt.strip()
                                  else prompt)
        with self.lock:  # a blank prompt reaches prompt_lens, which names it in its error
            return self._remember(prompt_lens(self.session, source, edits, self.top_k,
                                              lens=self.reader(lens)))

    def sub_updates(self, lens: PromptLens, layer: int, pos: int, k: int | None = None) -> SubUpdates:
        """`workbench.vocab.ffn_sub_updates` of `layer` at token `pos`, under the lens's scalings,
        the promoted tokens read through the same lens as the cells (`PromptLens.lens`).

        Units the lens zeroes or scales at that cell stay listed first, so they can be restored.
        """
        k = self.top_k if k is None else int(k)
        n = len(lens.str_tokens)
        p = pos + n if pos < 0 else pos
        kept = [e.neuron for e in lens.edits if e.layer == layer and e.pos == p]
        with self.lock:
            return ffn_sub_updates(self.session, lens.prompt, layer, position=pos, k=k,
                                   interventions=unit_interventions(lens.edits), keep=kept,
                                   lens=self.reader(lens.lens))
