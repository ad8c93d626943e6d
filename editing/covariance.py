"""Second moments of an FFN layer's keys over a corpus, cached on disk as safetensors.

For the output matrix W_out of layer l the key of a token is its FFN coefficient vector
k = m(x) in R^{d_mlp} (site ``mlp_post``: act(gate) * up on gated MLPs). ROME needs

    C = E[k k^T] = (1/N) sum_t k_t k_t^T          [d_mlp d_mlp]

(uncentred), accumulated in float64 over N corpus tokens. The cache file name hashes the model
(name, shape and a checksum of layer l's input weights), the layer, the corpus (name and a
checksum of its tokens) and the sample size, so a change in any of them computes anew.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench._types import Float, Tensor
from workbench.capture import capture_tokens
from workbench.errors import WorkbenchError
from workbench.hooks import Site
from workbench.memplan import plan_batch
from workbench.session import Session

log = logging.getLogger(__name__)

__all__ = ["KeyStats", "key_stats", "layers_key_stats", "cache_dir", "stats_key"]


@dataclass(frozen=True)
class KeyStats:
    """C = E[k k^T] of one layer's FFN keys.

    Args:
        layer: the block.
        moment: [d_mlp d_mlp] float32 second moment.
        n_tokens: tokens averaged.
        corpus: the corpus's name.
        key: the cache key (hex).
    """

    layer: int
    moment: Float[Tensor, "d_mlp d_mlp"]
    n_tokens: int
    corpus: str
    key: str

    def solve(self, k: Float[Tensor, " d_mlp *n"], ridge: float = 1e-6) -> Float[Tensor, " d_mlp *n"]:
        """C^{-1} k (k one key or keys as columns), with a relative ridge (ridge * mean diagonal)."""
        C = self.moment.double().to(k.device)
        lam = ridge * float(C.diagonal().mean())
        eye = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
        return torch.linalg.solve(C + lam * eye, k.double()).to(k.dtype)


def cache_dir() -> Path:
    """``covariance/`` under the workbench cache (``$WORKBENCH_CACHE`` or ``~/.cache/workbench``)."""
    from workbench.models import cache_root

    return cache_root() / "covariance"


def _digest(t: Tensor) -> str:
    return hashlib.sha1(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]


def stats_key(session: Session, layer: int, corpus, n_tokens: int) -> str:
    """Cache key: model (name, shape, layer-l key weights), layer, corpus, sample size."""
    mlp = session.model.blocks[layer].mlp
    parts = [session.name, str(session.n_layers), str(session.d_model), str(session.d_mlp),
             _digest(mlp.W_in), str(layer), corpus.name, _digest(corpus.ids[: 1_000_000]),
             str(n_tokens), "bos" if session.prepend_bos else "nobos"]
    try:
        parts.append(_digest(mlp.W_gate))
    except (AttributeError, KeyError, NotImplementedError, RuntimeError, ValueError):
        pass
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


@torch.no_grad()
def key_stats(session: Session, layer: int, corpus, n_tokens: int = 100_000, window: int = 128,
              tokens_per_batch: int = 8192, use_cache: bool = True,
              directory: str | Path | None = None, progress: bool = True) -> KeyStats:
    """E[k k^T] of `layer`'s FFN keys over the first `n_tokens` corpus tokens (cached).

    Example:
        >>> st = key_stats(s, 5, Corpus.load("data/corpus/tiny_corpus.txt", s.tokenizer))
        >>> st.moment.shape            # [d_mlp, d_mlp]
    """
    layer = session.check_layer(layer)
    return layers_key_stats(session, [layer], corpus, n_tokens, window, tokens_per_batch, use_cache,
                            directory, progress)[layer]


@torch.no_grad()
def layers_key_stats(session: Session, layers, corpus, n_tokens: int = 100_000, window: int = 128,
                     tokens_per_batch: int = 8192, use_cache: bool = True,
                     directory: str | Path | None = None, progress: bool = True) -> dict[int, KeyStats]:
    """`key_stats` of several layers, the missing ones from ONE pass over the corpus (MEMIT's
    layer range costs one forward sweep, not one per layer). Same cache files as `key_stats`."""
    from safetensors.torch import load_file, save_file

    from workbench.session import TokenBatch

    layers = [session.check_layer(layer) for layer in layers]
    if n_tokens < 1:
        raise WorkbenchError(f"n_tokens={n_tokens} must be >= 1")
    path = Path(directory) if directory is not None else cache_dir()
    out: dict[int, KeyStats] = {}
    todo = []
    for layer in layers:
        key = stats_key(session, layer, corpus, n_tokens)
        f = path / f"{key}.safetensors"
        if use_cache and f.exists():
            d = load_file(str(f))
            out[layer] = KeyStats(layer, d["moment"], int(d["n_tokens"]), corpus.name, key)
        else:
            todo.append((layer, key, f))
    if todo:
        sites = [Site("mlp_post", layer) for layer, _, _ in todo]
        acc = [torch.zeros(session.d_mlp, session.d_mlp, dtype=torch.float64, device=session.device)
               for _ in todo]
        n = 0
        # memory plan: captured keys + their float64 copy (one layer at a time) per token
        plan = plan_batch(session, sites, window, tokens_per_batch, extra=8 * session.d_mlp)

        def add(tokens: Tensor, bos: bool) -> None:
            """Accumulate k^T k of `tokens`' rows; on CUDA out-of-memory, in halves (nothing is
            added before a batch's products are all computed, so a retry counts nothing twice)."""
            try:
                lengths = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)
                cap = capture_tokens(session, TokenBatch(tokens, lengths), sites)
                prods = []
                for site in sites:
                    k = cap[site][:, int(bos):].reshape(-1, session.d_mlp).double()
                    prods.append(k.T @ k)
                    del k
            except torch.OutOfMemoryError:
                if tokens.shape[0] == 1:
                    raise
                torch.cuda.empty_cache()
                half = tokens.shape[0] // 2
                add(tokens[:half], bos)
                add(tokens[half:], bos)
                return
            for a, p in zip(acc, prods):
                a += p

        for wb in corpus.batches(session, window=window, tokens_per_batch=plan.tokens_per_batch,
                                 max_tokens=n_tokens, progress=progress,
                                 desc=f"key stats L{[t[0] for t in todo]}"):
            add(wb.tokens, bool(wb.bos))
            n += wb.tokens.shape[0] * (wb.tokens.shape[1] - int(wb.bos))
        if n == 0:
            raise WorkbenchError(f"corpus {corpus.name!r} gave no tokens for the key statistics")
        for (layer, key, f), a in zip(todo, acc):
            moment = (a / n).float().cpu()
            if use_cache:
                path.mkdir(parents=True, exist_ok=True)
                tmp = f.with_suffix(".tmp")
                save_file({"moment": moment, "n_tokens": torch.tensor(n)}, str(tmp),
                          metadata={"model": session.name, "layer": str(layer), "corpus": corpus.name})
                tmp.replace(f)
            out[layer] = KeyStats(layer, moment, n, corpus.name, key)
    return {layer: out[layer] for layer in layers}
