"""What a probe gets when it runs: the session (loaded on first use), the corpus, shared caches.

Corpus activations are captured once per (site kind, layers) and shared by every probe of a
battery that asks for them: a forward pass over the corpus windows keeps the requested sites at
every real (non-BOS) position, stored as float16 numpy arrays [n, layer, d].
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from workbench.errors import UnknownSiteError, choices
from workbench.hooks import SITE_KINDS
from workbench.session import Session

from .labels import LOOKAHEAD
from .spec import BatterySpec

__all__ = ["ProbeContext", "CorpusActs", "corpus_activations", "parse_layers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusActs:
    """Activations of corpus windows at one site kind.

    Args:
        acts: [n, layer, d] float16, n = rows * width (row-major over window positions).
        layers: the layer of each slice.
        ext: [rows, width + LOOKAHEAD] corpus ids of each row plus the ids that follow it in
            the stream (-1 past the end); position p of a row is ``ext[:, p]``.
        width: corpus positions per row (window minus the BOS column).
    """

    acts: np.ndarray
    layers: tuple[int, ...]
    ext: np.ndarray
    width: int

    @property
    def types(self) -> np.ndarray:
        """[n] current token id at each example (the control-task type)."""
        return self.ext[:, : self.width].reshape(-1)


def parse_layers(value, n_layers: int, check: Callable[[int], int]) -> list[int]:
    """``"all"`` or a list of layer indices, each checked against the model."""
    if value == "all":
        return list(range(n_layers))
    return [check(v) for v in value]


def _flat_site(kind: str) -> None:
    if kind not in SITE_KINDS or kind == "attn_pattern":
        valid = [k for k in SITE_KINDS if k != "attn_pattern"]
        raise UnknownSiteError(f"site={kind!r} cannot be probed per token; choose one of {choices(valid)}")


@torch.no_grad()
def corpus_activations(session: Session, corpus, kind: str, layers: list[int], max_tokens: int,
                       window: int = 128, tokens_per_batch: int = 4096,
                       progress: bool = True) -> CorpusActs:
    """Capture site `kind` at `layers` over the first `max_tokens` tokens of `corpus`."""
    from workbench.capture import capture_tokens
    from workbench.session import TokenBatch

    _flat_site(kind)
    sites = [f"{kind}:{layer}" for layer in layers]
    chunks, rows = [], []
    bos = None
    for wb in corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                             max_tokens=max_tokens, progress=progress, desc=f"capture {kind}"):
        bos = wb.bos
        lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], dtype=torch.long,
                             device=wb.tokens.device)
        cap = capture_tokens(session, TokenBatch(wb.tokens, lengths), sites)
        stacked = torch.stack([cap[s] for s in sites], 2)  # [b, pos, layer, ...]
        stacked = stacked[:, int(bos):].flatten(3)
        chunks.append(stacked.reshape(-1, len(sites), stacked.shape[-1]).to("cpu", torch.float16).numpy())
        rows.append(wb.starts.cpu().numpy())
    width = window - int(bool(bos))
    starts = np.concatenate(rows)
    ids = corpus.ids.numpy()
    idx = starts[:, None] + np.arange(width + LOOKAHEAD)[None, :]
    ext = np.where(idx < len(ids), ids[np.minimum(idx, len(ids) - 1)], -1)
    return CorpusActs(np.concatenate(chunks), tuple(layers), ext, width)


class ProbeContext:
    """Shared state of one battery run: lazy session and corpus, activation caches, timings.

    Args:
        spec: the battery spec.
        session: an already loaded session (else loaded from the spec on first use).
        progress: show progress bars.
    """

    def __init__(self, spec: BatterySpec, session: Session | None = None, progress: bool = True):
        self.spec = spec
        self._session = session
        self._corpus = None
        self._acts: dict[tuple, CorpusActs] = {}
        self.progress = progress
        self.timings: dict[str, float] = {}

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def session(self):
        if self._session is None:
            from workbench.session import Session

            t0 = time.perf_counter()
            self._session = Session.load(self.spec.model, device=self.spec.device, dtype=self.spec.dtype)
            self.timings["model_load_s"] = time.perf_counter() - t0
        return self._session

    @property
    def corpus(self):
        if self._corpus is None:
            from workbench.corpus import Corpus

            self._corpus = Corpus.load(self.spec.corpus, self.session.tokenizer,
                                       max_tokens=self.spec.max_tokens + LOOKAHEAD + 1)
        return self._corpus

    def seed_for(self, name: str) -> int:
        """A per-probe seed derived from the battery seed and the probe's name."""
        import zlib

        return (self.spec.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)

    def corpus_acts(self, kind: str, layers: list[int], max_tokens: int | None = None) -> CorpusActs:
        """Corpus activations at `kind`/`layers`, captured once per battery run."""
        n = min(max_tokens or self.spec.max_tokens, self.spec.max_tokens)
        key = (kind, tuple(layers), n)
        if key not in self._acts:
            for (k, ls, m), v in self._acts.items():  # reuse a larger capture of the same site
                if k == kind and set(layers) <= set(ls) and m >= n:
                    sel = [ls.index(layer) for layer in layers]
                    rows = max(1, n // self.spec.window)
                    nr = rows * v.width
                    self._acts[key] = CorpusActs(v.acts[:nr][:, sel], tuple(layers), v.ext[:rows], v.width)
                    break
            else:
                t0 = time.perf_counter()
                self._acts[key] = corpus_activations(self.session, self.corpus, kind, layers, n,
                                                     window=self.spec.window, progress=self.progress)
                self.timings[f"capture_{kind}_s"] = (self.timings.get(f"capture_{kind}_s", 0.0)
                                                     + time.perf_counter() - t0)
        return self._acts[key]
