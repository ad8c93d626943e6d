"""What every controller mixin shares: the session, the lock, the corpus and the results log."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from workbench.corpus import Corpus
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
