"""Corpora as one token stream, cut into fixed-length windows and batched by a token budget.

A corpus is a text file, a directory of ``*.txt`` files (sorted by name), a list of strings,
or a Hugging Face dataset by name (only when the hub is reachable). Its text is tokenized once
into one stream of ids; window `i` covers stream offsets ``[starts[i], starts[i] + width)``.
When the model wants BOS, each window row starts with BOS followed by ``window - 1`` corpus
tokens, and `WindowBatch.bos` says so. Offsets let analyses show any prefix with its context.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._types import Int, Tensor
from .errors import CorpusError
from .session import Session

log = logging.getLogger(__name__)

__all__ = ["Corpus", "WindowBatch"]

_CHUNK_LINES = 2000


@dataclass(frozen=True)
class WindowBatch:
    """One batch of corpus windows.

    Args:
        tokens: [batch pos] ids on the session device (BOS first when `bos`).
        starts: [batch] stream offset of each row's first corpus token.
        bos: whether position 0 of each row is a BOS token rather than corpus text.
        span: (smallest, largest) stream offset in the batch, known on the host (no sync).
    """

    tokens: Int[Tensor, "batch pos"]
    starts: Int[Tensor, " batch"]
    bos: bool
    span: tuple[int, int] | None = None

    def offsets(self) -> Int[Tensor, "batch pos"]:
        """Stream offset of every position (-1 for the BOS column)."""
        pos = torch.arange(self.tokens.shape[1], device=self.starts.device) - int(self.bos)
        off = self.starts[:, None] + pos[None, :]
        if self.bos:
            off[:, 0] = -1
        return off


class Corpus:
    """A tokenized text corpus.

    Args:
        name: a label stored with results (file name, dataset name).
        ids: [n_tokens] the token stream.
        tokenizer: the tokenizer that made `ids` (to decode contexts).
    """

    def __init__(self, name: str, ids: Tensor, tokenizer):
        if ids.numel() == 0:
            raise CorpusError(f"corpus {name!r} holds no tokens")
        self.name = name
        self.ids = ids.to(torch.int64)
        self.tokenizer = tokenizer
        self.source: str | None = None  # a path or "hf:NAME" to reload the same stream

    def __len__(self) -> int:
        return int(self.ids.numel())

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, tokens={len(self)})"

    # ------------------------------------------------------------ building
    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer, name: str = "texts",
                   max_tokens: int | None = None) -> Corpus:
        """Tokenize strings into one stream (each text followed by a newline)."""
        ids: list[int] = []
        chunk: list[str] = []

        def flush():
            if chunk:
                enc = tokenizer("".join(chunk), add_special_tokens=False)["input_ids"]
                ids.extend(enc)
                chunk.clear()

        for t in texts:
            if not t.strip():
                continue
            chunk.append(t if t.endswith("\n") else t + "\n")
            if len(chunk) >= _CHUNK_LINES:
                flush()
                if max_tokens is not None and len(ids) >= max_tokens:
                    break
        flush()
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if not ids:
            raise CorpusError(f"corpus {name!r} holds no text")
        return cls(name, torch.tensor(ids, dtype=torch.int64), tokenizer)

    @classmethod
    def from_path(cls, path: str | Path, tokenizer, max_tokens: int | None = None) -> Corpus:
        """A ``.txt`` file, or a directory of them (read in name order)."""
        p = Path(path)
        if not p.exists():
            raise CorpusError(f"corpus path={str(path)!r} does not exist")
        files = sorted(p.glob("**/*.txt")) if p.is_dir() else [p]
        if not files:
            raise CorpusError(f"corpus directory {str(path)!r} holds no .txt files")

        def lines():
            for f in files:
                with open(f, encoding="utf-8", errors="replace") as fh:
                    yield from fh

        return cls.from_texts(lines(), tokenizer, name=p.name, max_tokens=max_tokens)

    @classmethod
    def from_hf(cls, dataset: str, tokenizer, split: str = "train", column: str = "text",
                config: str | None = None, max_tokens: int | None = None) -> Corpus:
        """A Hugging Face dataset by name (needs the hub, or the datasets cache)."""
        try:
            import datasets

            ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
        except Exception as exc:  # no network, unknown name: one clear error
            raise CorpusError(f"dataset={dataset!r} could not be loaded: {exc}") from exc
        return cls.from_texts((row[column] for row in ds), tokenizer, name=dataset,
                              max_tokens=max_tokens)

    @classmethod
    def load(cls, source: str | Path | Sequence[str], tokenizer, max_tokens: int | None = None) -> Corpus:
        """A path (file or directory), ``hf:NAME[:SPLIT]``, or a list of strings."""
        if isinstance(source, (list, tuple)):
            return cls.from_texts(source, tokenizer, max_tokens=max_tokens)
        s = str(source)
        if s.startswith("hf:"):
            parts = s[3:].split(":")
            corpus = cls.from_hf(parts[0], tokenizer, split=parts[1] if len(parts) > 1 else "train",
                                 max_tokens=max_tokens)
        else:
            corpus = cls.from_path(s, tokenizer, max_tokens=max_tokens)
        corpus.source = s
        return corpus

    # ------------------------------------------------------------ windows
    def window_starts(self, window: int, bos: bool, max_windows: int | None = None) -> Tensor:
        """Stream offsets of consecutive, non-overlapping windows of `window` model tokens."""
        if window < 2:
            raise CorpusError(f"window={window} is too short; use at least 2 tokens")
        width = window - int(bos)
        n = len(self) // width
        if n == 0:
            raise CorpusError(f"corpus {self.name!r} has {len(self)} tokens, fewer than one "
                              f"window of {width}")
        if max_windows is not None:
            n = min(n, max_windows)
        return torch.arange(n, dtype=torch.int64) * width

    def batches(self, session: Session, window: int = 128, tokens_per_batch: int = 8192,
                max_tokens: int | None = None, progress: bool = True,
                desc: str = "corpus") -> Iterator[WindowBatch]:
        """Yield `WindowBatch`es of ``tokens_per_batch // window`` rows each, on the session device."""
        bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
        max_windows = None if max_tokens is None else max(1, max_tokens // window)
        starts = self.window_starts(window, bos, max_windows)
        rows = max(1, tokens_per_batch // window)
        width = window - int(bos)
        bar = tqdm(total=len(starts) * window, unit="tok", desc=desc, disable=not progress,
                   leave=False)
        try:
            for i in range(0, len(starts), rows):
                st = starts[i : i + rows]
                idx = st[:, None] + torch.arange(width)[None, :]
                tok = self.ids[idx]
                if bos:
                    col = torch.full((len(st), 1), session.tokenizer.bos_token_id, dtype=torch.int64)
                    tok = torch.cat([col, tok], 1)
                span = (int(st.min()), int(st.max()) + width - 1)
                yield WindowBatch(tok.to(session.device, non_blocking=True), st.to(session.device), bos, span)
                bar.update(tok.numel())
        finally:
            bar.close()

    def context(self, offset: int, before: int = 24, after: int = 0) -> tuple[str, str, str]:
        """(text before, the token at `offset`, text after) decoded from the stream."""
        if not 0 <= offset < len(self):
            raise CorpusError(f"offset={offset} is out of range 0..{len(self) - 1}")
        lo, hi = max(0, offset - before), min(len(self), offset + 1 + after)
        dec = self.tokenizer.decode
        return (dec(self.ids[lo:offset].tolist()), dec([int(self.ids[offset])]),
                dec(self.ids[offset + 1 : hi].tolist()))
