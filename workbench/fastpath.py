"""Fast capture: CUDA-graph replay for interactive prompts, torch.compile for corpus streaming.

The TransformerBridge splices a Python wrapper (with dozens of hook points) around every
Hugging Face submodule: a 32-token capture through it took 76-83 ms on an H100 against 25-38 ms
for the plain HF forward (docs/GPU.md), and its Python defeats graphs and compile. The fast
paths therefore run the *pure* view of the session's Hugging Face model (`workbench.pure`:
same Parameters, own hook tables, SDPA attention).

`choose_path` is the rule `workbench.capture` applies; `fast_capture` runs a chosen fast path
with the capture objects cached in `session.owned` (freed by `Session.close()`).

Activations are read with PyTorch module hooks on that pure tree (``L = model.layers[l]``):

    resid_pre   pre-hook on L (hidden_states)        resid_post  hook on L (output)
    resid_mid   pre-hook on L.pre_feedforward_layernorm (Gemma) / L.post_attention_layernorm
    mlp_in      pre-hook on L.mlp                    mlp_out     hook on L.mlp
    mlp_pre     hook on L.mlp.gate_proj              mlp_post    pre-hook on L.mlp.down_proj
    mlp_resid   hook on L.post_feedforward_layernorm (Gemma) / = mlp_out
    attn_z      pre-hook on L.self_attn.o_proj, viewed [batch pos head d_head]
    head_out    attn_z @ W_O per head (as in `workbench.capture`)
    attn_out    hook on L.self_attn.o_proj           attn_resid  hook on L.post_attention_layernorm
                                                                 (Gemma) / = attn_out

Every other site (``attn_pattern``), models whose HF layout lacks these modules, active bridge
hooks or interventions, and `logits=True` fall back to `workbench.generic.generic_capture`, so
results are always those of the generic capture (equal within float tolerance: SDPA vs eager
attention).

Right padding keeps real tokens exact: a prompt of W tokens is padded with `pad_id` to the
smallest bucket P >= W and row/column slices [:n, :W] of the replayed buffers are returned.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import no_type_check

import torch
from torch import nn

from ._types import Int, Tensor
from .errors import WorkbenchError, choices
from .generic import Capture, generic_capture
from .hooks import Intervention, Site, head_outputs, parse_site
from .memplan import free_bytes
from .pure import CAUSAL_ATTN, pure_model
from .session import Session, TokenBatch

__all__ = [
    "FAST_KINDS", "BACKENDS", "GraphCapture", "CompiledCapture", "compiled_capture", "fast_capture",
    "fast_supported", "check_backend", "choose_path", "estimate_row_bytes", "plan_chunks",
    "MemoryBudgetError", "GRAPH_MAX_ROWS", "GRAPH_MAX_WIDTH", "COMPILE_MIN_TOKENS",
    "COMPILE_AFTER_USES",
]

log = logging.getLogger(__name__)

FAST_KINDS = frozenset({
    "resid_pre", "resid_mid", "resid_post", "attn_z", "head_out", "attn_out", "attn_resid",
    "mlp_in", "mlp_pre", "mlp_post", "mlp_out", "mlp_resid",
})
BACKENDS = ("auto", "generic", "eager", "graph", "compiled")
GRAPH_MAX_ROWS, GRAPH_MAX_WIDTH = 8, 128   # auto on CUDA: at most this -> CUDA graph
COMPILE_MIN_TOKENS = 4096                  # auto on CUDA: at least this many rows x width -> compiled,
COMPILE_AFTER_USES = 8                     # from the 8th request of the same padded shape (a stream)


class MemoryBudgetError(WorkbenchError):
    """Even one row of the requested capture does not fit the memory budget."""


def _layers(pure: nn.Module) -> nn.ModuleList | None:
    base = getattr(pure, "model", None)
    return getattr(base, "layers", None) if base is not None else None


def fast_supported(session: Session, site: Site) -> bool:
    """Whether `site` can be read by the fast paths on this model's HF layout.

    Answers are kept per session and HF model in `session.owned` (walking the bridge's modules
    cost ~10 us a site, 0.3 ms for every call of a 30-site capture).
    """
    got = session.owned.get("fast_supported")
    if got is None or got[0] is not session.hf_model:
        got = session.owned["fast_supported"] = (session.hf_model, {})
    table: dict[Site, bool] = got[1]
    if site not in table:
        table[site] = _fast_supported(session, site)
    return table[site]


def _fast_supported(session: Session, site: Site) -> bool:
    if site.kind not in FAST_KINDS:
        return False
    layers = _layers(session.hf_model)
    if layers is None or site.layer >= len(layers):
        return False
    layer = layers[site.layer]
    if site.kind in ("mlp_in", "mlp_out", "mlp_resid", "mlp_post", "mlp_pre", "resid_mid"):
        if not hasattr(layer, "mlp") or not hasattr(layer.mlp, "down_proj"):
            return False
        if site.kind == "mlp_pre" and not hasattr(layer.mlp, "gate_proj"):
            return False
    if site.kind in ("attn_z", "head_out", "attn_out", "attn_resid"):
        return hasattr(layer, "self_attn") and hasattr(layer.self_attn, "o_proj")
    return True


def _first(args, kwargs, name="hidden_states") -> Tensor:
    return args[0] if args else kwargs[name]


def _out(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


# traced by torch.compile / CUDA graphs: run-time type checks would run on fake tensors inside
# the tracer, so the test suite's jaxtyping hook skips this class (and so does mypy)
@no_type_check
class _Trunk:
    """The pure HF trunk up to the last needed layer, with taps that record the sites' tensors.

    `run(ids)` returns {site: tensor} for every site (references to the activations; no copy).
    """

    def __init__(self, session: Session, sites: Sequence[Site]):
        self.session = session
        self.sites = list(sites)
        pure = pure_model(session, attn=CAUSAL_ATTN)  # ids only, right-padded: causal SDPA (flash)
        base = pure.get_submodule("model")  # the decoder trunk (LlamaModel, Gemma3TextModel)
        stop = max(s.layer for s in self.sites) + 1
        trunk = copy.copy(base)
        trunk.__dict__["_modules"] = dict(base._modules)
        trunk.__dict__["_modules"]["layers"] = nn.ModuleList(list(base.get_submodule("layers").children())[:stop])
        self.trunk = trunk
        self.store: dict[Site, Tensor] = {}
        self.n_heads, self.d_head = session.n_heads, session.d_head
        for s in self.sites:
            self._tap(trunk.get_submodule(f"layers.{s.layer}"), s)

    def _tap(self, layer: nn.Module, s: Site) -> None:
        store, gemma = self.store, hasattr(layer, "pre_feedforward_layernorm")
        sub = layer.get_submodule  # HF submodules by dotted name (typed Module, unlike attributes)
        kind = "attn_z" if s.kind == "head_out" else s.kind

        def pre(mod, fn_in):
            mod.register_forward_pre_hook(lambda m, a, k: store.__setitem__(s, fn_in(a, k)),
                                          with_kwargs=True)

        def post(mod):
            mod.register_forward_hook(lambda m, a, o: store.__setitem__(s, _out(o)))

        nh, dh = self.n_heads, self.d_head
        if kind == "resid_pre":
            pre(layer, _first)
        elif kind == "resid_post":
            post(layer)
        elif kind == "resid_mid":
            pre(sub("pre_feedforward_layernorm" if gemma else "post_attention_layernorm"), _first)
        elif kind == "mlp_in":
            pre(sub("mlp"), lambda a, k: _first(a, k, "x"))
        elif kind == "mlp_pre":
            post(sub("mlp.gate_proj"))
        elif kind == "mlp_post":
            pre(sub("mlp.down_proj"), lambda a, k: _first(a, k, "input"))
        elif kind == "mlp_out" or (kind == "mlp_resid" and not gemma):
            post(sub("mlp"))
        elif kind == "mlp_resid":
            post(sub("post_feedforward_layernorm"))
        elif kind == "attn_z":
            pre(sub("self_attn.o_proj"),
                lambda a, k: (lambda x: x.reshape(*x.shape[:-1], nh, dh))(_first(a, k, "input")))
        elif kind == "attn_out" or (kind == "attn_resid" and not gemma):
            post(sub("self_attn.o_proj"))
        elif kind == "attn_resid":
            post(sub("post_attention_layernorm"))
        else:  # pragma: no cover - guarded by fast_supported
            raise WorkbenchError(f"site {s} has no fast tap; fast kinds are {choices(FAST_KINDS, 20)}")

    def run(self, ids: Int[Tensor, "batch pos"]) -> dict[Site, Tensor]:
        self.store.clear()
        self.trunk(input_ids=ids, use_cache=False)
        out = dict(self.store)
        self.store.clear()
        return out


def _finish(session: Session, sites: Sequence[Site], raw: dict[Site, Tensor]) -> dict[Site, Tensor]:
    acts = {}
    for s in sites:
        t = raw[s]
        acts[s] = head_outputs(session, s.layer, t) if s.kind == "head_out" else t
    return acts


def _hook_tables(session: Session) -> list[dict]:
    """The forward-hook tables of every bridge hook point (checked before each fast call).

    Built once per session and kept in `session.owned` (the bridge's hook points are fixed;
    walking them costs milliseconds, checking the tables microseconds).
    """
    tables = session.owned.get("hook_tables")
    if tables is None:
        tables = []
        for hp in session.model.hook_dict.values():
            tables += [hp._forward_hooks, hp._forward_pre_hooks]
        session.owned["hook_tables"] = tables
    return tables


def _bridge_hooked(tables: list[dict]) -> bool:
    """True when any bridge hook (an intervention, `session.hooks`) is active: go generic."""
    return any(tables)


def _sub_batch(batch: TokenBatch, i: int, j: int) -> TokenBatch:
    return TokenBatch(batch.tokens[i:j], batch.lengths[i:j],
                      batch.prompts[i:j] if batch.prompts is not None else None,
                      batch.str_tokens[i:j] if batch.str_tokens else ())


def _as_batch(session: Session, prompts) -> TokenBatch:
    if isinstance(prompts, TokenBatch):
        return prompts
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2:
            from .errors import ShapeError
            raise ShapeError(f"tokens have shape {tuple(prompts.shape)}; expected [batch, pos]")
        n, w = prompts.shape
        return TokenBatch(prompts.to(session.device),
                          torch.full((n,), w, dtype=torch.long, device=session.device))
    return session.tokenize(prompts)


# ---------------------------------------------------------------- interactive: CUDA graphs
class GraphCapture:
    """Interactive capture: one CUDA graph per padded prompt length, replayed per prompt.

    On CUDA, the pure trunk (stopping after the last needed layer; no unembed) is captured for
    token shapes [batch, P] for each bucket P; a call pads the prompt on the right to the
    smallest P >= its length, replays, and copies the sites' buffers out (one flat clone).
    On CPU (or for prompts longer than the largest bucket) the pure trunk runs eagerly.
    Falls back to `generic_capture` for unsupported sites, active bridge hooks or interventions.

    Args:
        session: the model session (weights must only be edited in place while graphs exist:
            a replay reads the parameters' memory as it was at capture).
        sites: what to capture, e.g. ``sites("mlp_post", session=s)``.
        buckets: padded prompt lengths to capture graphs for.
        batch: rows per graph; larger batches run in chunks of `batch` rows.
        compile: also `torch.compile` the trunk before graph capture (fewer, fused kernels).

    Example:
        >>> gc = GraphCapture(s, sites("mlp_post", session=s))
        >>> cap = gc("The Eiffel Tower is in")       # same Capture as capture(s, ..., sites)
    """

    def __init__(self, session: Session, sites: Iterable[Site | str | tuple[str, int]],
                 buckets: Sequence[int] = (16, 32, 64, 128), batch: int = 1, compile: bool = False):
        self.session = session
        self.sites = [parse_site(s).check(session) for s in sites]
        if not self.sites:
            raise WorkbenchError("GraphCapture needs at least one site")
        if batch < 1 or not buckets or any(int(b) < 1 for b in buckets):
            raise WorkbenchError(f"batch={batch} and buckets={tuple(buckets)} must be positive")
        self.buckets = sorted(int(b) for b in buckets)
        self.batch = int(batch)
        self.fast = all(fast_supported(session, s) for s in self.sites)
        if not self.fast:
            bad = [str(s) for s in self.sites if not fast_supported(session, s)]
            log.info("GraphCapture: sites %s use the generic capture", bad)
            return
        self._trunk = _Trunk(session, self.sites)
        self.compiled = bool(compile)
        self._run = torch.compile(self._trunk.run, dynamic=False) if compile else self._trunk.run
        self._hook_points = _hook_tables(session)
        self.use_graphs = session.device.type == "cuda"
        self._graphs: dict[int, tuple] = {}
        self._owners = [m for m in self._trunk.trunk.modules() if m._parameters]
        self._weights = self._weights_key()

    def _weights_key(self) -> tuple[int, ...]:
        """Storage addresses of the trunk's Parameters (the pure tree shares the session's
        parameter tables): changes when one is replaced rather than edited in place."""
        return tuple(p.data_ptr() for m in self._owners for p in m._parameters.values() if p is not None)

    def release(self) -> None:
        """Drop the graphs and their memory pools (`Session.close()` calls this)."""
        self._graphs.clear()
        if getattr(self, "compiled", False):
            torch._dynamo.reset()

    def _graph(self, width: int):
        """(graph, static ids, flat output, [(site, offset, shape)]) for bucket `width`."""
        if width in self._graphs:
            return self._graphs[width]
        dev = self.session.device
        ids = torch.full((self.batch, width), self.session.pad_id, dtype=torch.long, device=dev)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # warm-up: cuBLAS handles, compile, allocator
                self._run(ids)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            raw = self._run(ids)
            parts = [raw[s] for s in self.sites]
            flat = torch.cat([p.reshape(-1) for p in parts])
        layout, off = [], 0
        for s, p in zip(self.sites, parts, strict=True):
            layout.append((s, off, tuple(p.shape)))
            off += p.numel()
        del raw, parts
        self._graphs[width] = (graph, ids, flat, layout)
        return self._graphs[width]

    def _replay(self, tokens: Tensor) -> dict[Site, Tensor]:
        n, w = tokens.shape
        key = self._weights_key()
        if key != self._weights:  # a Parameter was replaced (not edited in place): recapture
            self._graphs.clear()
            self._weights = key
        width = next(b for b in self.buckets if b >= w)
        graph, ids, flat, layout = self._graph(width)
        ids.fill_(self.session.pad_id)
        ids[:n, :w].copy_(tokens)
        graph.replay()
        out = flat.clone()
        return {s: out[o: o + _numel(shape)].view(shape)[:n, :w] for s, o, shape in layout}

    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str] | TokenBatch | Tensor) -> Capture:
        batch = _as_batch(self.session, prompts)
        if not self.fast or _bridge_hooked(self._hook_points):
            return generic_capture(self.session, batch, self.sites)
        tokens = batch.tokens
        if not self.use_graphs or tokens.shape[1] > self.buckets[-1]:
            return Capture(batch, _finish(self.session, self.sites, self._trunk.run(tokens)), path="eager")
        chunks = [self._replay(tokens[i: i + self.batch]) for i in range(0, len(batch), self.batch)]
        raw = chunks[0] if len(chunks) == 1 else {
            s: torch.cat([c[s] for c in chunks]) for s in self.sites}
        return Capture(batch, _finish(self.session, self.sites, raw), path="graph")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------- throughput: memory plan
def _site_row_bytes(session: Session, s: Site, seq: int, elem: int) -> int:
    """Bytes one row of `seq` tokens occupies for site `s` once captured."""
    if s.kind == "attn_pattern":
        return session.n_heads * seq * seq * elem
    if s.kind == "attn_z":
        return seq * session.n_heads * session.d_head * elem
    if s.kind == "head_out":
        return seq * session.n_heads * (session.d_model + session.d_head) * elem
    return seq * s.width(session) * elem


def estimate_row_bytes(session: Session, sites: Sequence[Site], seq: int,
                       dtype: torch.dtype | None = None, eager_attention: bool = False) -> tuple[int, int]:
    """(captured bytes, working bytes) per row of `seq` tokens.

    captured = sum over sites of the site's per-row size; working ~ one layer's live
    activations: seq * (8 d_model + 4 d_mlp) elements, plus with eager attention (the generic
    path) fp32 scores and pattern of every head (2 * 4 * heads * seq^2 bytes), times 1.5.
    """
    elem = torch.finfo(dtype or session.dtype).bits // 8
    out = sum(_site_row_bytes(session, s, seq, elem) for s in sites)
    work = seq * (8 * session.d_model + 4 * session.d_mlp) * elem
    if eager_attention:
        work += 2 * 4 * session.n_heads * seq * seq
    return out, int(1.5 * work)


def plan_chunks(n_rows: int, row_bytes: int, budget_bytes: int) -> list[tuple[int, int]]:
    """Split `n_rows` rows into equal chunks (the last may be shorter) of at most `budget_bytes`.

    Raises MemoryBudgetError when one row alone exceeds the budget.
    """
    if n_rows < 1:
        raise WorkbenchError(f"n_rows={n_rows}: nothing to capture")
    if row_bytes > budget_bytes:
        raise MemoryBudgetError(
            f"one row needs ~{row_bytes / 2**20:.1f} MiB but the memory budget is "
            f"{budget_bytes / 2**20:.1f} MiB; capture fewer sites or shorter windows")
    per = max(1, min(n_rows, budget_bytes // max(row_bytes, 1)))
    n_chunks = -(-n_rows // per)
    per = -(-n_rows // n_chunks)  # balance the chunks
    return [(i, min(i + per, n_rows)) for i in range(0, n_rows, per)]


# ---------------------------------------------------------------- throughput: torch.compile
class CompiledCapture:
    """Throughput capture for corpus streaming: the pure trunk under `torch.compile`, chunked.

    Each call estimates the bytes per row (`estimate_row_bytes`) against the free device
    memory times `memory_fraction` (or `budget_bytes`), splits the batch into equal chunks
    (`plan_chunks`; the last chunk is padded with pad rows so one compiled shape serves all),
    and keeps the result on the device when it fits in half the budget, else moves each
    chunk's activations to the CPU as it is made. An out-of-memory error halves the chunk and
    retries. Unsupported sites (attn_pattern) or active bridge hooks use `generic_capture`,
    chunked the same way.

    Args:
        session: the model session (SDPA in the session's dtype; load it in bfloat16 for speed).
        sites: what to capture.
        compile: torch.compile the trunk (default: on CUDA only).
        memory_fraction: share of the free memory one chunk may use.
        budget_bytes: a fixed budget instead (tests, sharing the GPU).
        bucket: pad each chunk's rows to a multiple of 8 and its width to a multiple of 128
            (right padding: real tokens are unchanged), so varied request shapes reuse a few
            compiled shapes (the default `capture` on CUDA sets it).
        mode: torch.compile's mode (None: its default; e.g. ``max-autotune-no-cudagraphs``
            tunes the matmuls, minutes more compile, benches/capture.py --compile-mode).
    """

    def __init__(self, session: Session, sites: Iterable[Site | str | tuple[str, int]],
                 compile: bool | None = None, memory_fraction: float = 0.7,
                 budget_bytes: int | None = None, bucket: bool = False, mode: str | None = None):
        if not 0 < memory_fraction <= 1:
            raise WorkbenchError(f"memory_fraction={memory_fraction} must be in (0, 1]")
        self.session = session
        self.sites = [parse_site(s).check(session) for s in sites]
        if not self.sites:
            raise WorkbenchError("compiled_capture needs at least one site")
        self.memory_fraction, self.budget_bytes = memory_fraction, budget_bytes
        self.bucket = bool(bucket)
        self.fast = all(fast_supported(session, s) for s in self.sites)
        self._hook_points = _hook_tables(session)
        self.compiled = False
        if self.fast:
            self._trunk = _Trunk(session, self.sites)
            self.compiled = session.device.type == "cuda" if compile is None else bool(compile)
            self._run = (torch.compile(self._trunk.run, dynamic=False, mode=mode) if self.compiled
                         else self._trunk.run)
        self.last_plan: list[tuple[int, int]] = []

    def release(self) -> None:
        """Drop the compiled code (`Session.close()` calls this; torch.compile's caches are
        per process, so this resets them for every session)."""
        if self.compiled:
            torch._dynamo.reset()
            self.compiled = False

    def _budget(self) -> int:
        if self.budget_bytes is not None:
            return int(self.budget_bytes)
        return int(free_bytes(self.session.device) * self.memory_fraction)

    def plan(self, batch: TokenBatch) -> tuple[list[tuple[int, int]], bool]:
        """(row chunks, offload to CPU) for `batch` under the current budget."""
        n, seq = batch.tokens.shape
        if self.bucket:
            seq = -(-seq // 128) * 128
        generic = not self.fast
        out_b, work_b = estimate_row_bytes(self.session, self.sites, seq, eager_attention=generic)
        budget = self._budget()
        offload = n * out_b > budget // 2  # on the CPU, "offloading" keeps chunks as they are
        per_row = work_b + out_b if offload else work_b + 2 * out_b  # chunk output + its copy
        room = budget if offload else budget - n * out_b
        return plan_chunks(n, per_row, max(room, 0)), offload

    def chunks(self, prompts) -> Iterator[Capture]:
        """Stream the capture chunk by chunk (each chunk's Capture stays on the device)."""
        batch = _as_batch(self.session, prompts)
        plan, _ = self.plan(batch)
        self.last_plan = plan
        for i, j in plan:
            yield from self._chunk(batch, i, j, j - i)

    def _chunk(self, batch: TokenBatch, i: int, j: int, rows: int) -> Iterator[Capture]:
        """Capture rows i:j, padded to `rows` rows; halves on out-of-memory."""
        sub = _sub_batch(batch, i, j)
        generic = not self.fast or _bridge_hooked(self._hook_points)
        try:
            with torch.no_grad():
                if generic:
                    yield generic_capture(self.session, sub, self.sites)
                    return
                tokens = sub.tokens
                w = tokens.shape[1]
                if self.bucket:
                    rows = -(-rows // 8) * 8
                width = -(-w // 128) * 128 if self.bucket else w
                if tokens.shape[0] < rows or width > w:
                    padded = tokens.new_full((rows, width), self.session.pad_id)
                    padded[: tokens.shape[0], :w] = tokens
                    tokens = padded
                cut = tokens.shape != sub.tokens.shape  # padded: keep only the real rows
                own: dict[Site, Tensor] = {}
                seen: set[int] = set()
                for site, t in self._run(tokens).items():
                    # copy the real rows of a padded chunk (freeing the rest), or a tensor that
                    # an earlier site shares; otherwise keep the trunk's own output
                    ptr = t.untyped_storage().data_ptr()
                    own[site] = t[: j - i, :w].clone() if cut or ptr in seen else t
                    seen.add(ptr)
                acts = _finish(self.session, self.sites, own)
        except torch.OutOfMemoryError:
            if j - i == 1:
                raise
            log.warning("out of memory at %d rows; halving the chunk", j - i)
            torch.cuda.empty_cache()
            mid = i + (j - i) // 2
            yield from self._chunk(batch, i, mid, mid - i)
            yield from self._chunk(batch, mid, j, mid - i)
            return
        yield Capture(sub, acts, path="compiled" if self.compiled else "eager")

    def __call__(self, prompts) -> Capture:
        """Capture the whole batch (on the CPU when it does not fit in half the budget)."""
        batch = _as_batch(self.session, prompts)
        plan, offload = self.plan(batch)
        self.last_plan = plan
        parts: dict[Site, list[Tensor]] = {s: [] for s in self.sites}
        for i, j in plan:
            for cap in self._chunk(batch, i, j, j - i):
                for s in self.sites:
                    t = cap.acts[s]
                    parts[s].append(t.to("cpu", non_blocking=False) if offload else t)
        acts = {s: (v[0] if len(v) == 1 else torch.cat(v)) for s, v in parts.items()}
        path = "generic" if not self.fast or _bridge_hooked(self._hook_points) else (
            "compiled" if self.compiled else "eager")
        return Capture(batch, acts, path=path)


def compiled_capture(session: Session, sites: Iterable[Site | str | tuple[str, int]],
                     **kwargs) -> CompiledCapture:
    """A `CompiledCapture` for `sites` (see its docstring); call it on token batches."""
    return CompiledCapture(session, sites, **kwargs)


def check_backend(backend: str) -> str:
    """Raise WorkbenchError unless `backend` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise WorkbenchError(f"backend={backend!r} is unknown; choose one of {choices(BACKENDS)}")
    return backend


def choose_path(session: Session, batch: TokenBatch, sites: Sequence[Site], *, logits: bool = False,
                interventions: Sequence[Intervention] = (), backend: str = "auto") -> str:
    """The capture path for a request: ``generic``, ``eager``, ``graph`` or ``compiled``.

    ``generic`` whenever a fast path could not give the same result: logits, interventions,
    active bridge hooks (`session.hooks`), a site kind outside `FAST_KINDS` (attention
    patterns), or a model layout the taps do not know. Otherwise a forced `backend` is
    honoured, and ``auto`` picks: on CUDA the graph for at most `GRAPH_MAX_ROWS` rows of at
    most `GRAPH_MAX_WIDTH` tokens, the compiled trunk from `COMPILE_MIN_TOKENS` tokens on once
    the same padded shape has come `COMPILE_AFTER_USES` times (a stream of batches: compiling
    cost 31 s at 8B and 61 s at 12B on an H200 for a 15-27% faster batch, docs/GPU.md, which
    a one-off request or a short job never wins back), the eager trunk otherwise; elsewhere
    the eager trunk (no graphs; compiling costs more than it saves on a CPU).
    """
    check_backend(backend)
    if backend == "generic" or logits or interventions or not sites:
        return "generic"
    if not all(fast_supported(session, s) for s in sites) or _bridge_hooked(_hook_tables(session)):
        return "generic"
    if backend != "auto":
        return backend
    if session.device.type != "cuda":
        return "eager"
    n, w = batch.tokens.shape
    if n <= GRAPH_MAX_ROWS and w <= GRAPH_MAX_WIDTH:
        return "graph"
    if n * w < COMPILE_MIN_TOKENS:
        return "eager"
    seen = session.owned.setdefault(("shapes", tuple(sites)), {})
    shape = (-(-n // 8) * 8, -(-w // 128) * 128)        # the compiled path's padded shape
    seen[shape] = seen.get(shape, 0) + 1
    return "compiled" if seen[shape] >= COMPILE_AFTER_USES else "eager"


def _owned(session: Session, key: tuple, make):
    """The capture object for `key`, made once and kept in `session.owned` (weakly back-referenced)."""
    got = session.owned.get(key)
    if got is None:
        got = session.owned[key] = make(weakref.proxy(session))
    return got


def fast_capture(session: Session, batch: TokenBatch, sites: Sequence[Site], path: str) -> Capture:
    """Capture `sites` by a fast `path` (``eager``, ``graph`` or ``compiled``; see `choose_path`).

    The GraphCapture / CompiledCapture per (path, sites, rows) lives in `session.owned` and
    holds the session only through a weak proxy, so nothing here keeps a session alive.
    """
    check_backend(path)
    sites = tuple(parse_site(s) for s in sites)
    if path == "generic":
        return generic_capture(session, batch, sites)
    if path == "graph":
        rows = 1 << max(0, len(batch) - 1).bit_length()  # 1, 2, 4, 8, ...: few graphs
        gc_ = _owned(session, ("graph", sites, rows), lambda s: GraphCapture(s, sites, batch=rows))
        return gc_(batch)
    if path == "eager":
        cc = _owned(session, ("eager", sites), lambda s: CompiledCapture(s, sites, compile=False))
        return cc(batch)
    cc = _owned(session, ("compiled", sites), lambda s: CompiledCapture(s, sites, compile=True, bucket=True))
    return cc(batch)
