"""Controller methods for the trace and edit studio (causal tracing, ROME apply / undo).

Mixed into `widgets.controller.Controller`; the studio view calls these and nothing else.
"""

from __future__ import annotations

import dataclasses
import logging

from editing.outcome import EditOutcome, apply_and_measure

from ._base import Progress
from ._state import ControllerState

log = logging.getLogger(__name__)


class EditingMixin(ControllerState):
    """Causal traces and rank-one edits with undo, for one session."""

    trace_samples: int = 3
    stats_tokens: int = 20_000
    _noise_std: float | None = None

    def noise_std(self) -> float:
        from editing import embedding_std

        if self._noise_std is None:
            with self.lock:
                self._noise_std = embedding_std(self.session, self._corpus(), max_tokens=4096)
        return self._noise_std

    def trace(self, prompt: str, subject: str, answer: str | None = None,
              kinds: tuple[str, ...] = ("resid", "mlp"), progress: Progress | None = None):
        """`editing.trace_fact` with `trace_samples` noise samples (returns a TraceResult)."""
        from editing import TraceConfig, trace_fact

        sigma = self.noise_std()
        if progress:
            progress(0.1, "tracing (restoring each layer and token)")
        with self.lock:
            res = trace_fact(self.session, prompt, subject, sigma, answer=answer,
                             config=TraceConfig(kinds=tuple(kinds), samples=self.trace_samples))
        return self._remember(res)

    def apply_edit(self, prompt: str, subject: str, target: str, layer: int,
                   rome_config=None, progress: Progress | None = None, lens: str = "logit") -> EditOutcome:
        """Compute the ROME update (model untouched), then `editing.outcome.apply_and_measure`,
        reading v* - v through `lens` (its linear part at `layer`)."""
        from editing import EditRequest, compute_rome_update, key_stats

        s = self.session
        reader = self.reader(lens)        # a missing lens fails before the optimisation
        req = EditRequest(prompt, subject, target)
        with self.lock:
            if progress:
                progress(0.05, f"key statistics of layer {layer}")
            stats = key_stats(s, layer, self._corpus(), n_tokens=self.stats_tokens, progress=False)
            if progress:
                progress(0.3, "optimising the new value (ROME)")
            upd = compute_rome_update(s, req, stats, rome_config)
            if progress:
                progress(0.85, "measuring the edited model")
            out, handle = apply_and_measure(s, upd, lens=reader, corpus=self._corpus(), blast_tokens=2048)
        self.edit_handles.append((handle, out))
        return self._remember(out)

    def undo_edit(self) -> EditOutcome | None:
        """Undo the most recent edit still applied; returns its outcome marked inactive."""
        while self.edit_handles:
            handle, out = self.edit_handles.pop()
            with self.lock:
                if handle.undo():
                    return dataclasses.replace(out, active=False)
        return None
