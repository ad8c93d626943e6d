"""Controller methods for the trace and edit studio (causal tracing, ROME apply / undo).

Mixed into `widgets.controller.Controller`; the studio view calls these and nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ._base import Progress
from .results import EditOutcome

log = logging.getLogger(__name__)

PROJECT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "tiny_corpus.txt"


class EditingMixin:
    """Causal traces and rank-one edits with undo, for one session."""

    session: object
    lock: object
    trace_samples: int = 3
    stats_tokens: int = 20_000

    def _corpus(self):
        from workbench import Corpus

        if getattr(self, "_corpus_obj", None) is None:
            src = getattr(self, "corpus", None) or PROJECT_CORPUS
            self._corpus_obj = (src if hasattr(src, "batches")
                                else Corpus.load(src, self.session.tokenizer))
        return self._corpus_obj

    def noise_std(self) -> float:
        from editing import embedding_std

        if getattr(self, "_noise_std", None) is None:
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

    def _next(self, prompt: str, ids: dict[str, int], k: int = 5):
        s = self.session
        p = torch.softmax(s.last_logits(prompt)[0].float(), -1)
        top = p.topk(k)
        return ({name: float(p[i]) for name, i in ids.items()},
                tuple((s.tokenizer.decode([int(i)]), float(v))
                      for i, v in zip(top.indices.tolist(), top.values.tolist())))

    def apply_edit(self, prompt: str, subject: str, target: str, layer: int,
                   rome_config=None, progress: Progress | None = None) -> EditOutcome:
        """Compute the ROME update (model untouched), apply it, and measure before / after."""
        from editing import EditRequest, apply, compute_rome_update, key_stats
        from editing._prompts import locate_subject, target_id

        s = self.session
        req = EditRequest(prompt, subject, target)
        with self.lock:
            sp = locate_subject(s, prompt, subject)
            ids = {"target": target_id(s, sp.text, target),
                   "answer": int(s.last_logits(sp.text)[0].argmax())}
            if progress:
                progress(0.05, f"key statistics of layer {layer}")
            stats = key_stats(s, layer, self._corpus(), n_tokens=self.stats_tokens, progress=False)
            if progress:
                progress(0.3, "optimising the new value (ROME)")
            upd = compute_rome_update(s, req, stats, rome_config)
            p_before, top_before = self._next(sp.text, ids)
            gen_before = s.generate(sp.text, max_new_tokens=12)
            handle = apply(s, upd)
            try:
                if progress:
                    progress(0.85, "measuring the edited model")
                p_after, top_after = self._next(sp.text, ids)
                gen_after = s.generate(sp.text, max_new_tokens=12)
            except BaseException:
                handle.undo()
                raise
        W = s.model.blocks[layer].mlp.W_out.detach().float()
        u, r = upd.u.float().cpu(), upd.r.float().cpu()
        rel = float(u.norm() * r.norm() / W.norm())
        top_units = (u.abs() * r.norm()).topk(8)
        promotes = (r.to(s.W_U.device, s.W_U.dtype) @ s.W_U).float().topk(8).indices.tolist()
        out = EditOutcome(
            prompt=sp.text, subject=subject, target=target, layer=int(layer),
            answer=s.tokenizer.decode([ids["answer"]]), p_before=p_before, p_after=p_after,
            top_before=top_before, top_after=top_after, gen_before=gen_before, gen_after=gen_after,
            delta_rel=rel, units=tuple(zip(top_units.indices.tolist(), top_units.values.tolist())),
            r_promotes=tuple(s.tokenizer.decode([t]) for t in promotes),
        )
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
