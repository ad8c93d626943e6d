"""What every controller mixin shares: the session, the lock, the corpus, the lenses, the results log."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from workbench.corpus import Corpus
from workbench.errors import WorkbenchError
from workbench.lenses import LENS_KINDS, LensNotFound, LensReader, LogitReader, load_lens
from workbench.session import Session

__all__ = ["ControllerState", "PROJECT_CORPUS"]

PROJECT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "tiny_corpus.txt"


class ControllerState:
    """The state the controller's mixins read: one session, one lock, one corpus, a history.

    Args:
        session: the `workbench.Session` all views share.
        corpus: a `Corpus` or path for key statistics, noise scale and memories (default: the
            project's small corpus).
    """

    def __init__(self, session: Session, corpus: Corpus | str | Path | None = None):
        self.session = session
        self.corpus = corpus
        self.lock = threading.RLock()
        self.edit_handles: list = []
        self.history: list[object] = []  # results computed, newest last (for session export)
        self._corpus_obj: Corpus | None = None
        self._readers: dict[str, LensReader] = {"logit": LogitReader()}

    def _remember(self, result: Any) -> Any:
        self.history.append(result)
        del self.history[:-50]
        return result

    def _corpus(self) -> Corpus:
        if self._corpus_obj is None:
            src = self.corpus or PROJECT_CORPUS
            self._corpus_obj = (src if isinstance(src, Corpus)
                                else Corpus.load(src, self.session.tokenizer))
        return self._corpus_obj

    # ------------------------------------------------------------------ lenses
    def lens_choices(self) -> dict[str, str | None]:
        """Each lens kind -> None when it can be drawn for this session's model, else why not
        (no lens saved at the cache path, or one saved for another model)."""
        out: dict[str, str | None] = {}
        for kind in LENS_KINDS:
            try:
                self.reader(kind)
                out[kind] = None
            except LensNotFound:
                out[kind] = (f"no {kind} lens is saved for {self.session.name}; train one with "
                             f"`workbench lens-train --lens {kind} --model {self.session.name}`")
            except WorkbenchError as exc:
                out[kind] = str(exc)
        return out

    def reader(self, kind: str) -> LensReader:
        """The lens of `kind` for this session's model (`workbench.lenses.load_lens`, cached)."""
        if kind not in self._readers:
            with self.lock:
                self._readers[kind] = load_lens(self.session, kind)
        return self._readers[kind]
