"""FFN key-value memories (Geva et al. 2021): top-triggering prefixes per key over a corpus.

Every FFN unit i of layer l is a memory: its key(s) are input weights, its coefficient m_i
(site ``mlp_post``) says how strongly a prefix triggers it, and its value v_i (row i of W_out)
is what it writes. `harvest` streams a corpus and keeps, per key, the k prefixes with the
largest m_i at their last token, plus each key's activation frequency (share of tokens with
m_i > 0) and mean m_i. The index stores corpus stream offsets (to show any prefix with its
context from the corpus later) and the token ids of a short context around each of the best
prefixes (to show them without the corpus).

Streaming merge (on the session's device, O(L d_mlp k) memory, never all activations): until
every key holds k entries, ``topk(m, k, dim=0)`` of a batch's coefficients m [t d_mlp] gives
each key's batch candidates, merged with the running top-k by one ``topk`` over the [k + k]
candidates per key. From then on only threshold crossings are merged: coefficients above the
key's running k-th value (`_TopK.sparse_merge`; after a few batches a small share of the batch),
found with one compare and one ``nonzero``, sorted with the stored entries of the keys they hit.
One pass gives the statistics, each key's crossing count and which 64-token runs hold a
crossing (`_fused_stats`, compiled on CUDA); `_TopK.sorted_merge` reads the crossings from those
runs only and ranks them with one sort, launched behind the next batch's capture with no host
wait (on CUDA the sizes come back through pinned memory and an event). Batches arriving with
smaller offsets than those stored (not the corpus stream's order) take `_TopK.sparse_merge`. Order is strict,
(value desc, offset asc), realised by packing both into
one int64 per candidate (`pack_keys`), so the result is unique and equals a brute-force top-k
over the same tokens, ties included (identical contexts give identical coefficients). Only
keys whose batch threshold ties with an unselected token and could still enter the running
top-k are re-ranked exactly over the whole batch (rare; checked per batch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ._types import Bool, Float, Int, Tensor
from .capture import capture_tokens
from .corpus import Corpus
from .errors import CorpusError, NeuronOutOfRange, ShapeError, WorkbenchError, check_index
from .hooks import Site
from .memplan import MemoryPlan, plan_batch
from .session import Session, TokenBatch

log = logging.getLogger(__name__)

__all__ = ["MemoryIndex", "MemoryExample", "harvest", "harvest_topk", "index_from_merged", "pack_keys", "unpack_keys"]

FORMAT = "workbench-memory-index/1"
_LOW = (1 << 32) - 1
_PAD = torch.iinfo(torch.int64).min
_GROUP_BYTES = 2 << 30  # CUDA: layers stacked per merge step, at most this many bytes


def _ordered(v: Float[Tensor, "..."]) -> Int[Tensor, "..."]:
    bits = (v.float() + 0.0).view(torch.int32)  # + 0.0 maps -0.0 to +0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)


def pack_keys(values: Float[Tensor, "..."], offsets: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """One int64 per (value, offset), ordered like (value desc, offset asc): larger is better.

    key = ordered(value) * 2^32 + (2^32 - 1 - offset), with ordered() the float32 bits mapped
    to an integer of the same order. Offsets must lie in [0, 2^32).
    """
    return (_ordered(values) << 32) + (_LOW - offsets.to(torch.int64))


def unpack_keys(keys: Int[Tensor, "..."]) -> tuple[Float[Tensor, "..."], Int[Tensor, "..."]]:
    """(values float32, offsets int64) of packed keys; pads come back as (-inf, -1)."""
    pad = keys == _PAD
    o = (keys >> 32).to(torch.int32)
    values = torch.where(o < 0, o ^ 0x7FFFFFFF, o).view(torch.float32)
    offsets = _LOW - (keys & _LOW)
    return (torch.where(pad, float("-inf"), values),
            torch.where(pad, torch.full_like(offsets, -1), offsets))


@dataclass(frozen=True)
class MemoryExample:
    """One top-triggering prefix of a key: the text before, the trigger token, what follows."""

    offset: int
    coefficient: float
    prefix: str
    trigger: str
    next_token: str


@dataclass
class MemoryIndex:
    """Per-layer top-k trigger prefixes of every FFN key, with activation statistics.

    Args:
        model: the session's model name.
        corpus: the corpus name; corpus_source: where it was loaded from (for reloading).
        corpus_tokens: length of the corpus token stream (checked when examples are shown).
        window, bos: the window length and BOS policy of the harvest (prefixes never reach
            before their window's start, exactly as the model saw them).
        layers: [L] the harvested layers.
        values: [L d_mlp k] top coefficients, descending (-inf where fewer than k tokens).
        offsets: [L d_mlp k] corpus stream offsets of the prefixes' last tokens (-1: none).
        frequency: [L d_mlp] share of tokens with m_i > 0. mean: [L d_mlp] mean m_i.
        n_tokens: tokens harvested.
        context: [L d_mlp k_show c+1] token ids of the best k_show prefixes: the last c tokens
            of the prefix (trigger last, -1 before the window start) and the next token in the
            last column (-1 at the end of the corpus); None when not stored.
    """

    model: str
    corpus: str
    corpus_source: str | None
    corpus_tokens: int
    window: int
    bos: bool
    layers: tuple[int, ...]
    values: Float[Tensor, "L d_mlp k"]
    offsets: Int[Tensor, "L d_mlp k"]
    frequency: Float[Tensor, "L d_mlp"]
    mean: Float[Tensor, "L d_mlp"]
    n_tokens: int
    context: Int[Tensor, "L d_mlp k_show c1"] | None = None

    @property
    def k(self) -> int:
        return int(self.values.shape[-1])

    @property
    def d_mlp(self) -> int:
        return int(self.values.shape[1])

    def row(self, layer: int) -> int:
        if layer not in self.layers:
            raise WorkbenchError(f"layer={layer} was not harvested; harvested layers: {list(self.layers)}")
        return self.layers.index(layer)

    def save(self, directory: str | Path) -> Path:
        """Write ``index.safetensors`` (tensors) and ``index.json`` (metadata) to `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        t = {"values": self.values.float().contiguous(), "offsets": self.offsets.long().contiguous(),
             "frequency": self.frequency.float().contiguous(), "mean": self.mean.float().contiguous()}
        if self.context is not None:
            t["context"] = self.context.to(torch.int32).contiguous()
        save_file(t, str(d / "index.safetensors"))
        meta = {"format": FORMAT, "model": self.model, "corpus": self.corpus,
                "corpus_source": self.corpus_source, "corpus_tokens": self.corpus_tokens,
                "window": self.window, "bos": self.bos, "layers": list(self.layers), "k": self.k,
                "d_mlp": self.d_mlp, "n_tokens": self.n_tokens,
                "context_shape": list(self.context.shape) if self.context is not None else None}
        (d / "index.json").write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> MemoryIndex:
        d = Path(directory)
        if not (d / "index.json").exists() or not (d / "index.safetensors").exists():
            raise WorkbenchError(f"{str(d)!r} is not a memory index (index.json + index.safetensors)")
        meta = json.loads((d / "index.json").read_text())
        if meta.get("format") != FORMAT:
            raise WorkbenchError(f"{d}/index.json has format={meta.get('format')!r}; expected {FORMAT!r}")
        t = load_file(str(d / "index.safetensors"))
        ctx = t["context"].long() if "context" in t else None
        return cls(meta["model"], meta["corpus"], meta.get("corpus_source"), int(meta["corpus_tokens"]),
                   int(meta["window"]), bool(meta["bos"]), tuple(meta["layers"]), t["values"], t["offsets"],
                   t["frequency"], t["mean"], int(meta["n_tokens"]), ctx)

    def examples(self, layer: int, neuron: int, source, context: int = 24,
                 n: int | None = None) -> list[MemoryExample]:
        """The top trigger prefixes of (layer, neuron), best first.

        `source`: the harvested `Corpus` (any context length), or a tokenizer / session to
        decode the stored context (at most the stored length, and only the best k_show).
        """
        r = self.row(layer)
        check_index(neuron, self.d_mlp, f"neuron (layer {layer})", NeuronOutOfRange)
        vals, offs = self.values[r, neuron].tolist(), self.offsets[r, neuron].tolist()
        out = []
        if isinstance(source, Corpus):
            if len(source) != self.corpus_tokens:
                raise CorpusError(f"corpus {source.name!r} has {len(source)} tokens; the index was built "
                                  f"on {self.corpus!r} with {self.corpus_tokens}")
            width = self.window - int(self.bos)
            dec, ids = source.tokenizer.decode, source.ids
            for v, o in zip(vals, offs):
                if o < 0:
                    continue
                start = max((o // width) * width, o - context)
                nxt = dec([int(ids[o + 1])]) if o + 1 < len(source) else ""
                out.append(MemoryExample(int(o), float(v), dec(ids[start:o].tolist()), dec([int(ids[o])]), nxt))
        else:
            if self.context is None:
                raise WorkbenchError("this index stores no prefix tokens; pass the harvested Corpus")
            tok = getattr(source, "tokenizer", source)
            for j in range(min(self.context.shape[2], len(offs))):
                if offs[j] < 0:
                    continue
                row = self.context[r, neuron, j].tolist()
                pre = [x for x in row[:-1] if x >= 0][-(context + 1):]
                out.append(MemoryExample(int(offs[j]), float(vals[j]), tok.decode(pre[:-1]), tok.decode(pre[-1:]),
                                         tok.decode([row[-1]]) if row[-1] >= 0 else ""))
        return out[:n] if n is not None else out

    def next_token_ids(self, layer: int, corpus_or_n: Corpus | int = 1, n: int = 1) -> Int[Tensor, "d_mlp n"]:
        """Token following each key's top-n trigger prefixes (-1 where there is none).

        Read from the stored context (no corpus needed) for the first k_show prefixes, or from
        the corpus when one is given.
        """
        if isinstance(corpus_or_n, int):
            n, corpus = corpus_or_n, None
        else:
            corpus = corpus_or_n
        r = self.row(layer)
        if corpus is None:
            if self.context is None:
                raise WorkbenchError("this index stores no prefix tokens; pass the harvested Corpus")
            return self.context[r, :, :n, -1].clone()
        off = self.offsets[r, :, :n]
        nxt = off + 1
        ok = (off >= 0) & (nxt < len(corpus))
        return torch.where(ok, corpus.ids[nxt.clamp(0, len(corpus) - 1)], torch.full_like(off, -1))


def _context_ids(ids: Int[Tensor, " n"], offsets: Int[Tensor, "..."], window: int, bos: bool,
                 c: int) -> Int[Tensor, "... c1"]:
    """[..., c+1]: the c tokens ending at each offset (within its window, else -1), then the next."""
    width = window - int(bos)
    rel = torch.arange(-c + 1, 2)
    idx = offsets[..., None] + rel
    wstart = (offsets.clamp_min(0) // width * width)[..., None]
    ok = (offsets[..., None] >= 0) & (idx >= wstart) & (idx < len(ids))
    out = torch.where(ok, ids[idx.clamp(0, len(ids) - 1)], torch.full_like(idx, -1))
    return out


class _TopK:
    """Running exact top-k per (layer, key) in (value desc, offset asc) order, on one device.

    Works on groups of layers at once, X [G d_mlp t] (on CUDA the group's coefficients are
    stacked transposed, so each key's slice is contiguous and every step below is one kernel
    for the whole group; on the CPU a group is one layer, a view). `select` takes each key's
    k+1 largest coefficients with one ``topk``; a tie at the boundary exists exactly when the
    (k+1)-th equals the k-th, and only such keys whose threshold can still enter the running
    top-k are re-ranked exactly (`fix`, rare). `merge` packs the [k + k] candidates per key into
    int64 keys and keeps the top k. One host sync per group (whether any key needs a fix).
    """

    def __init__(self, n_layers: int, n_keys: int, k: int, device):
        self.k = k
        self.values = torch.full((n_layers, n_keys, k), float("-inf"), device=device)
        self.offsets = torch.full((n_layers, n_keys, k), -1, dtype=torch.int64, device=device)
        self.exact_fixes = 0
        self.crossings = 0
        self.seen = 0        # tokens merged so far: every key holds min(seen, k) entries
        self.max_offset = -1

    def select(self, sl: slice, X: Float[Tensor, "G U t"]) -> tuple[Tensor, Tensor, Tensor]:
        """(values [G U kk] desc, token indices [G U kk], tie flags [G U]) of a group's batch."""
        t = X.shape[-1]
        kk = min(self.k, t)
        v, i = X.topk(min(kk + 1, t), dim=-1)
        v = v.float()
        if v.shape[-1] > kk:
            flag = (v[..., kk] == v[..., kk - 1]) & (v[..., kk - 1] >= self.values[sl, :, -1])
            return v[..., :kk], i[..., :kk], flag
        return v, i, torch.zeros(v.shape[:-1], dtype=torch.bool, device=v.device)

    def fix(self, x: Float[Tensor, "U t"], off: Int[Tensor, " t"], v: Tensor, i: Tensor,
            bad: Int[Tensor, " nb"]) -> None:
        """Exact (value desc, offset asc) selection for keys `bad` of one layer (in place)."""
        kk = v.shape[-1]
        self.exact_fixes += int(bad.numel())
        keys = pack_keys(x[bad].float(), off[None, :])                   # [nb t]
        vb, ob = unpack_keys(keys.topk(kk, dim=1).values)                # [nb kk]
        v[bad] = vb
        i[bad] = torch.searchsorted(off, ob.reshape(-1)).view(ob.shape)

    def merge(self, sl: slice, v: Tensor, o: Tensor) -> None:
        """Merge batch candidates (values, offsets [G U kk]) into the group's running top-k."""
        run_o = self.offsets[sl]
        cand = torch.cat([pack_keys(self.values[sl], run_o.clamp_min(0)), pack_keys(v, o)], -1)
        pad = torch.cat([run_o < 0, torch.zeros(o.shape, dtype=torch.bool, device=o.device)], -1)
        cand = torch.where(pad, _PAD, cand)
        self.values[sl], self.offsets[sl] = unpack_keys(cand.topk(self.k, dim=-1).values)

    def sorted_merge(self, sl: slice, X: Float[Tensor, "G t U"], blocks: Bool[Tensor, "G U nb"],
                     per_key: Int[Tensor, "G U"], off: Int[Tensor, " t"],
                     sizes: tuple[int, int, int] | None = None, block: int = 64) -> int:
        """`sparse_merge` for strict order, from run flags, with one sort.

        Crossings are found in two steps: the flagged `block`-token runs of each key
        (`_crossing_blocks`, key-major), then the crossings inside them, so they come out
        key-major and in token order without a full-size mask. Strict order (every batch offset
        above every stored one) means a key's candidates rank by value desc, then stored before
        new, then new by token order, which is their order in the concatenation [stored k;
        crossings]. So each candidate gets one int64 (affected-key rank << 32 | (2^32 - 1 -
        ordered value)) and a single stable ascending sort ranks all keys at once (equal ints
        keep that concatenation order). Any batch size; needs < 2^31 keys (`fits_sorted`).
        Exact like `merge`. With
        `sizes` (crossings, affected keys, flagged runs; known on the host) nothing here waits
        for the GPU. Returns the number of crossings.
        """
        k, U = self.k, X.shape[-1]
        t = X.shape[1]
        vals = self.values[sl].view(-1, k)                                 # views: written in place
        offs = self.offsets[sl].view(-1, k)
        if sizes is None:
            sizes = (int(per_key.sum()), int((per_key > 0).sum()), int(blocks.sum()))
        n, n_aff, n_blk = sizes
        if n == 0:
            return 0
        dev = X.device
        bg, bu, bb = torch.nonzero_static(blocks, size=n_blk).unbind(1)   # key-major runs
        tok = bb[:, None] * block + torch.arange(block, device=dev)        # [nb block]
        inside = tok < t
        tok = tok.clamp(max=t - 1)
        xb = X[bg[:, None], tok, bu[:, None]].float()                      # [nb block]
        bkey = bg * U + bu
        hit = (xb > vals[bkey, -1][:, None]) & inside                     # the same compare
        r, j = torch.nonzero_static(hit, size=n).unbind(1)                # key-major, token order
        key = bkey[r]                                                      # ascending
        tp = tok[r, j]
        aff = torch.nonzero_static(per_key.reshape(-1) > 0, size=n_aff).reshape(-1)
        seg = torch.searchsorted(aff, key)
        A = n_aff
        cand_v = torch.cat([vals[aff].reshape(-1), xb[r, j]])
        cand_o = torch.cat([offs[aff].reshape(-1), off[tp]])
        rank_key = torch.cat([torch.arange(A, device=dev).repeat_interleave(k), seg])
        desc = _LOW - (_ordered(cand_v) + (1 << 31))                      # in [0, 2^32)
        order = ((rank_key << 32) | desc).sort(stable=True).indices       # ties keep `place` order
        rk = rank_key[order]
        pos = torch.arange(order.numel(), device=dev) - torch.searchsorted(rk, rk)
        dst = torch.where(pos < k, rk * k + pos, A * k)                    # the rest: a spare slot
        new_v = torch.empty(A * k + 1, dtype=vals.dtype, device=dev)
        new_o = torch.empty(A * k + 1, dtype=offs.dtype, device=dev)
        new_v[dst], new_o[dst] = cand_v[order], cand_o[order]             # every key keeps exactly k
        vals[aff], offs[aff] = new_v[:-1].view(A, k), new_o[:-1].view(A, k)
        return int(n)

    def fits_sorted(self, n_keys: int, t: int) -> bool:
        return n_keys < (1 << 31)

    def sparse_merge(self, sl: slice, X: Float[Tensor, "G t U"], off: Int[Tensor, " t"], strict: bool) -> int:
        """Merge a batch by its threshold crossings only; every key must already hold k entries.

        A coefficient can enter key i's top-k only if it beats the running k-th value (ties
        enter too unless `strict`, i.e. unless every batch offset exceeds every stored one, when
        a tie always loses on the offset). After the first batches few coefficients cross, so
        this costs one compare over X, a `nonzero` (the host sync) and two stable sorts of
        the crossings plus the k stored entries of each affected key. Exact like `merge`.
        Returns the number of crossings.
        """
        k, U = self.k, X.shape[-1]
        thr = self.values[sl, :, -1][:, None, :]                          # [G 1 U]
        idx = (X > thr if strict else X >= thr).nonzero()                 # [N 3] (g, t, u)
        if idx.shape[0] == 0:
            return 0
        g, tp, u = idx.unbind(1)
        key = g * U + u                                                    # key within the group
        vals = self.values[sl].view(-1, k)                                 # views: written in place
        offs = self.offsets[sl].view(-1, k)
        aff = torch.unique(key)                                            # [A]
        ids = torch.cat([aff.repeat_interleave(k), key])
        packed = torch.cat([pack_keys(vals[aff], offs[aff]).reshape(-1), pack_keys(X[g, tp, u].float(), off[tp])])
        order = torch.argsort(packed, descending=True, stable=True)
        order = order[torch.argsort(ids[order], stable=True)]              # by key, then best first
        ids, packed = ids[order], packed[order]
        rank = torch.arange(ids.numel(), device=ids.device) - torch.searchsorted(ids, ids)
        keep = rank < k
        vals[ids[keep], rank[keep]], offs[ids[keep], rank[keep]] = unpack_keys(packed[keep])
        return int(idx.shape[0])


def _crossing_blocks(hit: Bool[Tensor, "G t U"], block: int) -> Bool[Tensor, "G U nb"]:
    """Whether each key has a crossing in each run of `block` tokens, key-major."""
    G, t, U = hit.shape
    pad = -t % block
    if pad:
        hit = torch.cat([hit, hit.new_zeros(G, pad, U)], 1)
    return hit.view(G, (t + pad) // block, block, U).any(2).transpose(1, 2).contiguous()


def _group_stats(X: Float[Tensor, "G t U"], thr: Float[Tensor, "G 1 U"] | None, block: int = 64
                 ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Per key: #X > 0 [G U], sum of X [G U] float32 and, given running thresholds, which
    `block`-token runs hold a strict crossing X > thr ([G U nb], key-major: `_crossing_blocks`)
    and the crossings per key [G U].

    One function so that, compiled on CUDA (`_fused_stats`), every reduction reads the
    coefficients once; no [G t U] mask is written, only the 1/block-sized run flags.
    """
    fires = (X > 0).sum(1)
    sums = X.sum(1, dtype=torch.float32)
    if thr is None:
        return fires, sums, None, None
    hit = X > thr
    return fires, sums, _crossing_blocks(hit, block), hit.sum(1)


_COMPILED_STATS = None


def _fused_stats(X, thr, block: int = 64, compiled: bool = True):
    """`_group_stats`, under torch.compile on CUDA (one fused pass), eager elsewhere and when
    not `compiled` (a stream's short last batch: its new shape would compile for one use)."""
    global _COMPILED_STATS
    if X.device.type != "cuda" or not compiled:
        return _group_stats(X, thr, block)
    if _COMPILED_STATS is None:
        _COMPILED_STATS = torch.compile(_group_stats, dynamic=False)
    return _COMPILED_STATS(X, thr, block)


class _HostReady:
    """Stands in for a CUDA event on other devices: the counts are already on the host."""

    def synchronize(self) -> None:
        pass


_MergeArgs = tuple[slice, Tensor, Tensor, Tensor, Tensor]  # `sorted_merge`'s (sl, X, blocks, per_key, off)


def _counts_ready(args: _MergeArgs) -> dict:
    """A deferred `sorted_merge`: its sizes (crossings, affected keys, flagged runs) copied to
    the host without a wait (pinned memory, an event), so the merge can be launched behind
    the next capture."""
    blocks, per_key = args[2], args[3]
    sizes = torch.stack([per_key.sum(), (per_key > 0).sum(), blocks.sum()])
    if per_key.device.type != "cuda":
        return {"args": args, "sizes": sizes, "ready": _HostReady()}
    host = torch.empty(3, dtype=sizes.dtype, pin_memory=True)
    host.copy_(sizes, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return {"args": args, "sizes": host, "ready": ready}


def _run_pending(top: _TopK, pending: list[dict]) -> None:
    """Launch the deferred merges and empty `pending`; the only wait is for their sizes (ready
    before the capture that was queued after them)."""
    for p in pending:
        p["ready"].synchronize()
        sl, X, blocks, per_key, off = p["args"]
        top.crossings += top.sorted_merge(sl, X, blocks, per_key, off, sizes=tuple(p["sizes"].tolist()))
    pending.clear()


def _stacked(device: torch.device) -> bool:
    """Stack layers transposed for the merge (CUDA: few large kernels); the CPU merges views."""
    return device.type == "cuda"


@torch.no_grad()
def harvest(session: Session, corpus: Corpus, layers: Sequence[int] | None = None, k: int = 20,
            window: int = 64, tokens_per_batch: int | None = None, max_tokens: int | None = None,
            context: int = 12, show: int = 10, backend: str = "auto",
            progress: bool = True) -> MemoryIndex:
    """Stream `corpus` and index every FFN key's top-k trigger prefixes (see module docstring).

    One forward per batch with only the ``mlp_post`` sites hooked (the capture stops after
    the last requested layer, no unembedding); every real, non-BOS position of every window
    is a prefix.

    Args:
        layers: layers to harvest (default all). k: prefixes kept per key (>= 1).
        window: model tokens per window (BOS included).
        tokens_per_batch: an upper bound on tokens per batch (default 16384); the memory plan
            (`workbench.memplan`) lowers it to what fits, and an out-of-memory batch is split
            in halves. Neither changes the result.
        max_tokens: stop after about this many tokens (default: the whole corpus).
        context, show: store `context` prefix tokens (+ the next token) of the best `show`
            prefixes per key in the index (0 to skip).
        backend: the capture path (`workbench.capture`; ``auto`` picks the fastest).
    """
    state = harvest_topk(session, corpus, layers, k, window, tokens_per_batch, max_tokens, backend, progress)
    merged = {"layers": state["layers"], "values": state["values"], "offsets": state["offsets"],
              "n": state["n"], "frequency": state["fires"].double() / state["n"],
              "mean": state["sum"] / state["n"]}
    return index_from_merged(session, corpus, merged, window, context=context, show=show)


DEFAULT_TOKENS_PER_BATCH = 16384


def harvest_plan(session: Session, layers: Sequence[int], window: int, tokens_per_batch: int | None = None,
                 available: int | None = None) -> MemoryPlan:
    """The harvest's memory plan: captured ``mlp_post`` of `layers` plus the merge's copies.

    Per token beyond the capture: the stacked group (a copy of up to `_GROUP_BYTES` of the
    coefficients, bounded), its float32 crossings and a transposed copy in the first batches,
    counted as 2x the captured coefficients in float32.
    """
    sites = [Site("mlp_post", layer) for layer in layers]
    extra = 2 * 4 * len(layers) * session.d_mlp
    return plan_batch(session, sites, window, tokens_per_batch or DEFAULT_TOKENS_PER_BATCH,
                      extra=extra, available=available)


@torch.no_grad()
def harvest_topk(session: Session, corpus, layers: Sequence[int] | None = None, k: int = 20, window: int = 64,
                 tokens_per_batch: int | None = None, max_tokens: int | None = None, backend: str = "auto",
                 progress: bool = True) -> dict:
    """The raw harvest state: what `harvest` indexes and what a Ray shard sends to the driver.

    Returns ``{"layers": [L] int64, "values": [L d_mlp k] float32 (desc, -inf pads),
    "offsets": [L d_mlp k] int64 (-1 pads), "n": tokens, "fires": [L d_mlp] int64 (#m_i > 0),
    "sum": [L d_mlp] float64 (sum of m_i, per batch in float32), "tokens_per_batch": the
    planned batch, "rows": rows per forward at the end (smaller after an out-of-memory split),
    "paths": {capture path: forwards}}``, all on the CPU; the running top-k stays on the
    session's device while streaming.
    """
    layers = list(range(session.n_layers)) if layers is None else [session.check_layer(x) for x in layers]
    if not layers:
        raise WorkbenchError("layers is empty; give at least one layer")
    if k <= 0:
        raise ShapeError(f"k={k} must be >= 1")
    if len(corpus) >= 1 << 32:
        raise CorpusError(f"corpus of {len(corpus)} tokens: offsets must stay below 2^32")
    plan = harvest_plan(session, layers, window, tokens_per_batch)
    dev, L, U = session.device, len(layers), session.d_mlp
    sites = [Site("mlp_post", layer) for layer in layers]
    top = _TopK(L, U, k, dev)
    fires = torch.zeros(L, U, dtype=torch.int64, device=dev)
    sums = torch.zeros(L, U, dtype=torch.float64, device=dev)
    n = 0
    pending: list[dict] = []    # threshold merges of the last batch, run once the next capture is queued
    rows = max(1, plan.tokens_per_batch // window)
    paths: dict[str, int] = {}
    for wb in corpus.batches(session, window=window, tokens_per_batch=plan.tokens_per_batch,
                             max_tokens=max_tokens, progress=progress, desc="harvest"):
        b0 = int(wb.bos)
        lo, hi = wb.span if wb.span is not None else wb.offsets()[:, b0:].aminmax()
        strict = int(lo) > top.max_offset   # rows are in stream order: every chunk is strict too
        i, nrows = 0, wb.tokens.shape[0]
        while i < nrows:
            j = min(nrows, i + rows)
            tokens = wb.tokens[i:j]
            lengths = torch.full((j - i,), tokens.shape[1], device=tokens.device)
            try:
                cap = capture_tokens(session, TokenBatch(tokens, lengths), sites, backend=backend)
            except torch.OutOfMemoryError:
                if j - i == 1:
                    raise
                rows = max(1, (j - i) // 2)
                log.warning("harvest: out of memory at %d rows x %d tokens; %d rows from now on",
                            j - i, tokens.shape[1], rows)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            paths[cap.path] = paths.get(cap.path, 0) + 1
            _run_pending(top, pending)             # launched behind the capture just queued
            off = (wb.starts[i:j, None] + torch.arange(tokens.shape[1] - b0, device=wb.starts.device)
                   ).reshape(-1).to(dev)           # [t], increasing
            ms = [cap[s][:, b0:].reshape(-1, U) for s in sites]   # [t U] per layer
            n += _merge_batch(top, ms, off, fires, sums, pending, strict, dev, full=j - i == rows)
            del cap, ms
            i = j
        top.max_offset = max(top.max_offset, int(hi))
    _run_pending(top, pending)
    if n == 0:
        raise CorpusError(f"corpus {corpus.name!r} gave no tokens to harvest")
    log.info("harvest: %d tokens, %d exact tie fixes, %d threshold crossings merged, paths %s", n,
             top.exact_fixes, top.crossings, paths)
    return {"layers": torch.tensor(layers, dtype=torch.int64), "values": top.values.cpu(),
            "offsets": top.offsets.cpu(), "n": n, "fires": fires.cpu(), "sum": sums.cpu(),
            "tokens_per_batch": plan.tokens_per_batch, "rows": rows, "paths": paths}


def _merge_batch(top: _TopK, ms: list[Tensor], off: Tensor, fires: Tensor, sums: Tensor,
                 pending: list[dict], strict: bool, dev: torch.device, full: bool = True) -> int:
    """Statistics and top-k merge of one captured batch ([t U] per layer); returns t. A batch
    that is not `full` (the stream's tail) takes the eager statistics pass."""
    k, L, U = top.k, len(ms), ms[0].shape[-1]
    t = ms[0].shape[0]
    sparse = top.seen >= k
    stack = _stacked(dev)
    group = max(1, min(L, _GROUP_BYTES // max(1, t * U * ms[0].element_size()))) if stack else 1
    for g0 in range(0, L, group):
        sl = slice(g0, min(L, g0 + group))
        X = torch.stack(ms[sl]) if stack else ms[g0][None]             # [G t U]
        fast = sparse and strict and top.fits_sorted(X.shape[0] * U, t)
        thr = top.values[sl, :, -1][:, None, :] if fast else None    # float32; X promotes
        f, sm, blocks, per_key = _fused_stats(X, thr, compiled=full)
        fires[sl] += f
        sums[sl] += sm.double()
        if fast:
            pending.append(_counts_ready((sl, X, blocks, per_key, off)))
            continue
        if sparse:
            top.crossings += top.sparse_merge(sl, X, off, strict)
            continue
        XT = X.transpose(1, 2).contiguous() if stack else X.transpose(1, 2)  # [G U t]
        v, i, flag = top.select(sl, XT)
        if bool(flag.any()):                                   # the one host sync per group
            for jj in flag.any(-1).nonzero().flatten().tolist():
                top.fix(XT[jj], off, v[jj], i[jj], flag[jj].nonzero().flatten())
        top.merge(sl, v, off[i])
        del XT
    top.seen += t
    return t


def index_from_merged(session: Session, corpus: Corpus, merged: dict, window: int, context: int = 12,
                      show: int = 10) -> MemoryIndex:
    """A `MemoryIndex` from a harvest dict (`harvest`, or `distributed.merge_harvests` of shards):
    ``layers``, ``values``, ``offsets``, ``n``, ``frequency``, ``mean``."""
    bos = bool(session.prepend_bos and session.tokenizer.bos_token_id is not None)
    offsets = merged["offsets"].long()
    ctx = None
    if context > 0 and show > 0:
        ctx = _context_ids(corpus.ids, offsets[:, :, :show], window, bos, context).to(torch.int32)
    return MemoryIndex(session.name, corpus.name, getattr(corpus, "source", None), len(corpus), window, bos,
                       tuple(int(x) for x in torch.as_tensor(merged["layers"]).tolist()),
                       merged["values"].float(), offsets, merged["frequency"].float(), merged["mean"].float(),
                       int(merged["n"]), ctx)

