"""The model session: one loaded model, its tokenizer, device and dtype, shared by everything.

A `Session` wraps a TransformerLens 4.x `TransformerBridge` (HF weights, raw numerics: logits
equal the Hugging Face model's). Notebooks, widgets, reports and batteries share one session
in the kernel. This module imports no analysis.

Example:
    >>> s = Session.load()                         # SmolLM2-135M-Instruct, offline
    >>> s.next_token("The Eiffel Tower is located in the city of")
    ' Paris'
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._types import Bool, Float, Int, Tensor
from .errors import (
    EmptyPromptError,
    HeadOutOfRange,
    LayerOutOfRange,
    NeuronOutOfRange,
    ShapeError,
    TokenError,
    UnknownModelError,
    WorkbenchError,
    check_index,
    check_int,
    choices,
)
from .models import DEFAULT_MODEL, EMBEDDED, cached_model_dir, gguf_model_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BOS_FAMILIES = ("gemma",)  # model_type prefixes whose models were trained with BOS on every sequence

HookFn = Callable[[Tensor, object], Tensor | None]


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids of a batch of prompts.

    Right padding keeps every real token's activations identical to an unpadded run (causal
    attention never looks right, and rotary positions start at 0), so no attention mask is
    needed; `mask` marks the real tokens.

    Args:
        tokens: [batch, pos] ids, padded on the right with `pad_id`.
        lengths: [batch] number of real tokens per row.
        prompts: the input strings (or None when built from ids).
        str_tokens: per row, the decoded string of each real token.
    """

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    prompts: tuple[str, ...] | None = None
    str_tokens: tuple[tuple[str, ...], ...] = field(default=(), repr=False)

    @property
    def mask(self) -> Bool[Tensor, "batch pos"]:
        """True at real (non-padding) tokens."""
        pos = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return pos[None, :] < self.lengths.to(self.tokens.device)[:, None]

    @property
    def last(self) -> Int[Tensor, " batch"]:
        """Index of each row's last real token."""
        return self.lengths - 1

    def __len__(self) -> int:
        return self.tokens.shape[0]


class SessionClosedError(WorkbenchError):
    """The session was closed (`Session.close()`); load a new one."""


class Session:
    """One loaded model with its tokenizer, device, dtype and BOS policy.

    A session owns its GPU memory: the weights and every artefact made for it (pure HF views,
    CUDA-graph captures, compiled captures) live in the session (`owned`), never in a
    module-level table, so `close()` (or leaving a ``with Session.load(...) as s:`` block, or
    dropping the last reference) frees all of it.

    Args:
        model: a TransformerLens `TransformerBridge` wrapping a Hugging Face causal LM.
        tokenizer: the Hugging Face tokenizer (loaded from a directory).
        name: the model's name as the user gave it.
        prepend_bos: whether prompts get the BOS token.
    """

    def __init__(self, model, tokenizer, name: str, prepend_bos: bool):
        self._model = model
        self.owned: dict = {}  # per-session artefacts (fast-path captures, pure views); freed by close()
        for p in model.parameters():  # analyses take gradients w.r.t. activations, not weights
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.prepend_bos = prepend_bos
        cfg = model.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.d_model: int = int(cfg.d_model)
        self.d_mlp: int = int(cfg.d_mlp)
        self.n_heads: int = int(cfg.n_heads)
        self.d_head: int = int(cfg.d_head)
        self.n_kv_heads: int = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.d_vocab: int = int(cfg.d_vocab)
        self.gated: bool = bool(getattr(cfg, "gated_mlp", False))
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id: int = int(pad)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        prepend_bos: bool | None = None,
        device_map: str | dict | None = None,
    ) -> Session:
        """Load a model: an embedded name, a local HF directory, a GGUF file or a hub name.

        All four take the same path: find a directory (a GGUF file is dequantized once into a
        cached directory; a hub name is resolved by transformers when a hub is reachable),
        read its config and tokenizer, pick dtype and BOS, boot the bridge.

        Args:
            name: ``smollm2-135m`` (default), ``gemma3-270m``, a directory with config and
                weights, a ``.gguf`` file, or a hub name TransformerLens supports.
            device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``, ...
            dtype: ``auto`` (default: float32 on the CPU; on CUDA bfloat16 when the device
                supports it or the config asks for it, else the config's float16, else
                float32), ``float32``, ``bfloat16``, ``float16`` or a torch dtype.
            prepend_bos: override the BOS policy (default: `default_bos`, from the tokenizer
                and the model family).
            device_map: passed to transformers for models that do not fit one device
                (``"auto"``, or a module -> device dict); `device` is then ignored.
        """
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import AutoConfig, AutoTokenizer

        if not isinstance(dtype, torch.dtype) and dtype != "auto":
            _dtype(dtype)  # reject a bad name before any loading
        dev = resolve_device(device)
        bos = None
        if name in EMBEDDED:
            path, bos = cached_model_dir(name), EMBEDDED[name].prepend_bos
        elif Path(name).is_dir():
            path = Path(name)
        elif Path(name).is_file():
            if Path(name).suffix.lower() != ".gguf":
                raise UnknownModelError(f"model={name!r} is a file but not a .gguf file; give a model "
                                        f"directory, a GGUF file, an embedded name ({choices(EMBEDDED)}) "
                                        "or a hub name")
            path = gguf_model_dir(Path(name))
        else:
            path = None
        if path is not None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        source = str(path) if path is not None else name
        try:
            tok = AutoTokenizer.from_pretrained(source)
            config = AutoConfig.from_pretrained(source)
            torch_dtype = resolve_dtype(dtype, dev, config)
            bridge = TransformerBridge.boot_transformers(
                source,
                tokenizer=tok,
                device=dev if device_map is None else None,
                dtype=torch_dtype,
                device_map=device_map,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise UnknownModelError(
                f"model={name!r} could not be loaded ({type(exc).__name__}: {str(exc)[:200]}); "
                f"embedded models are {choices(EMBEDDED)}, or give a model directory or a hub "
                "name TransformerLens supports (the hub must be reachable)"
            ) from exc
        bridge.eval()
        if prepend_bos is None:
            prepend_bos = default_bos(tok, config) if bos is None else bos
        log.info("loaded %s: %s, BOS %s", name, torch_dtype, "on" if prepend_bos else "off")
        return cls(bridge, tok, name, prepend_bos)

    @classmethod
    def from_hf(cls, hf_model, tokenizer, name: str = "custom", prepend_bos: bool = False,
                device: str = "auto") -> Session:
        """Wrap an in-memory Hugging Face causal LM (tests, random-init models of real shapes)."""
        from transformer_lens.model_bridge import TransformerBridge

        dev = resolve_device(device)
        hf_model = hf_model.to(dev).eval()
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=dev,
            dtype=next(hf_model.parameters()).dtype,
        )
        bridge.eval()
        return cls(bridge, tokenizer, name, prepend_bos)

    # ---------------------------------------------------------------- lifetime
    @property
    def model(self):
        """The TransformerBridge (raises SessionClosedError after `close()`)."""
        if self._model is None:
            raise SessionClosedError(f"session {self.name!r} is closed; load a new one with Session.load")
        return self._model

    @property
    def closed(self) -> bool:
        return self._model is None

    def close(self) -> None:
        """Free everything the session owns: fast-path captures (CUDA graphs, compiled trunks),
        pure views, the model's weights; then return cached CUDA blocks to the device.

        Idempotent. Tensors the caller still holds (a `Capture`'s activations) stay valid.
        """
        if self._model is None:
            return
        cuda = any(p.is_cuda for p in self._model.parameters())
        for obj in list(self.owned.values()):
            release = getattr(obj, "release", None)
            if release is not None:
                release()
        self.owned.clear()
        self._model = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hf_model(self):
        """The wrapped Hugging Face model (weights are shared with the bridge)."""
        return self.model.original_model

    def __repr__(self) -> str:
        if self.closed:
            return f"Session({self.name!r}, closed)"
        return (f"Session({self.name!r}, layers={self.n_layers}, d_model={self.d_model}, "
                f"d_mlp={self.d_mlp}, heads={self.n_heads}, device={self.device}, dtype={self.dtype})")

    # ---------------------------------------------------------------- validation
    def check_layer(self, layer: int) -> int:
        return check_index(layer, self.n_layers, "layer", LayerOutOfRange)

    def check_neuron(self, layer: int, neuron: int) -> int:
        self.check_layer(layer)
        return check_index(neuron, self.d_mlp, f"neuron (layer {layer})", NeuronOutOfRange)

    def check_head(self, layer: int, head: int) -> int:
        self.check_layer(layer)
        return check_index(head, self.n_heads, f"head (layer {layer})", HeadOutOfRange)

    # ---------------------------------------------------------------- tokens
    def encode(self, prompt: str, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one prompt, with BOS per the session's policy."""
        if not isinstance(prompt, str):
            raise EmptyPromptError(f"prompt={prompt!r} must be a string, got {type(prompt).__name__}")
        if prompt == "":
            raise EmptyPromptError("prompt='' is empty; give at least one character")
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        if bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids

    def tokenize(self, prompts: str | Sequence[str], prepend_bos: bool | None = None) -> TokenBatch:
        """Tokenize one prompt or a list into a right-padded `TokenBatch` on the session device."""
        if isinstance(prompts, str):
            prompts = [prompts]
        elif not isinstance(prompts, Iterable) or isinstance(prompts, bytes):
            raise EmptyPromptError(f"prompts={prompts!r} must be a string or a list of strings")
        prompts = list(prompts)
        if not prompts:
            raise EmptyPromptError("prompts=[] is empty; give at least one prompt")
        rows = [self.encode(p, prepend_bos) for p in prompts]
        return self.batch_from_ids(rows, prompts=prompts)

    def batch_from_ids(self, rows: Sequence[Sequence[int]], prompts: Sequence[str] | None = None) -> TokenBatch:
        """Right-pad lists of token ids into a `TokenBatch`."""
        if not rows or any(len(r) == 0 for r in rows):
            raise EmptyPromptError("a row of token ids is empty")
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        str_tokens = tuple(tuple(self.tokenizer.convert_ids_to_tokens(list(r))) for r in rows)
        str_tokens = tuple(tuple(self._readable(t) for t in row) for row in str_tokens)
        return TokenBatch(tokens.to(self.device), lengths.to(self.device),
                          tuple(prompts) if prompts is not None else None, str_tokens)

    def _readable(self, token: str) -> str:
        return self.tokenizer.convert_tokens_to_string([token])

    def to_str_tokens(self, ids: Sequence[int] | Tensor) -> list[str]:
        """Decode each id separately (the string each token contributes)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def token_id(self, text: str) -> int:
        """The id of `text` when it is exactly one token; raise TokenError otherwise.

        A leading space matters (" Paris" and "Paris" are different tokens).
        """
        if not isinstance(text, str):
            raise TokenError(f"target={text!r} must be a string that is one token, "
                             f"got {type(text).__name__}")
        if text == "":
            raise TokenError(f"target={text!r} is empty; give a string that is one token")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = self.to_str_tokens(ids)
            raise TokenError(
                f"target={text!r} is {len(ids)} tokens {pieces}; it must be exactly one token"
            )
        return int(ids[0])

    def token_ids(self, texts: Sequence[str]) -> list[int]:
        return [self.token_id(t) for t in texts]

    # ---------------------------------------------------------------- running
    def _as_batch(self, prompts: str | Sequence[str] | TokenBatch) -> TokenBatch:
        return prompts if isinstance(prompts, TokenBatch) else self.tokenize(prompts)

    @torch.no_grad()
    def logits(self, prompts: str | Sequence[str] | TokenBatch) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits for every position (padding positions hold garbage; see `TokenBatch.mask`)."""
        batch = self._as_batch(prompts)
        return self.model(batch.tokens, return_type="logits")

    def last_logits(self, prompts: str | Sequence[str] | TokenBatch) -> Float[Tensor, "batch d_vocab"]:
        """Logits at each row's last real token."""
        batch = self._as_batch(prompts)
        logits = self.logits(batch)
        return logits[torch.arange(len(batch), device=logits.device), batch.last.to(logits.device)]

    def next_token(self, prompt: str) -> str:
        """The greedy next token of one prompt, as text."""
        return self.tokenizer.decode([int(self.last_logits(prompt)[0].argmax())])

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 20, greedy: bool = True,
                 temperature: float = 1.0, seed: int = 0) -> str:
        """Continue `prompt` (through the bridge, so active hooks and edits apply); returns new text."""
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", ShapeError, lo=0)
        ids = self.encode(prompt)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        tokens = torch.tensor([ids], device=self.device)
        new: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.model(tokens, return_type="logits")[0, -1].float()
            if greedy:
                nxt = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, -1).cpu()
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            new.append(nxt)
            if nxt == self.tokenizer.eos_token_id:
                break
            tokens = torch.cat([tokens, torch.tensor([[nxt]], device=self.device)], 1)
        return self.tokenizer.decode(new)

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Read a residual-stream vector in the vocabulary: final norm, then the unembedding.

        This is the logit lens convention: the model's own final norm (RMSNorm with its learned
        scale) applied to `resid` as if it were the last layer's output, then W_U (and b_U).
        """
        self._check_width(resid, "unembed")
        x = self.final_norm(resid)
        return self.unembed_normed(x)

    def final_norm(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The model's final normalisation applied to `resid`."""
        self._check_width(resid, "final_norm")
        return self.model.ln_final(resid.to(self.dtype))

    def unembed_normed(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """W_U (and b_U, and any logit soft-cap the model applies) on a normalised vector."""
        self._check_width(x, "unembed_normed")
        return self.model.unembed(x.to(self.dtype))

    def _check_width(self, x: Tensor, what: str) -> None:
        """ShapeError unless `x` is a tensor whose last dimension is d_model."""
        if not isinstance(x, Tensor):
            raise ShapeError(f"{what} expects a tensor [..., d_model={self.d_model}], got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ShapeError(f"{what} expects last dimension d_model={self.d_model}, got "
                             f"{x.shape[-1] if x.dim() else 'a 0-d tensor'} (shape {tuple(x.shape)})")

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """The unembedding matrix (a transposed view of the HF lm_head weight)."""
        return self.hf_model.lm_head.weight.T

    # ---------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Session]:
        """Register raw forward hooks `(hook_name, fn(act, hook))` for the body only.

        Hooks are removed in ``finally``: an exception in the body leaves none behind.
        """
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            yield self

    def hook_names(self) -> list[str]:
        return list(self.model.hook_dict)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnknownModelError(f"device={device!r} asked for CUDA, but no CUDA device is present")
    return dev


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UnknownModelError(f"dtype={dtype!r} is not supported; choose one of {choices(DTYPES)}")
    return DTYPES[dtype]


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, config=None) -> torch.dtype:
    """The dtype to load in; ``auto``: float32 off CUDA; on CUDA bfloat16 when the device
    supports it or the config was saved in bfloat16, else the config's float16, else float32."""
    if dtype != "auto":
        return _dtype(dtype)
    if device.type != "cuda":
        return torch.float32
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(saved, str):
        saved = DTYPES.get(saved)
    if saved == torch.bfloat16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if saved == torch.float16 else torch.float32


def default_bos(tokenizer, config=None) -> bool:
    """BOS policy from the tokenizer and the model family, not from the architecture name.

    On when the model family was trained with BOS on every sequence (Gemma) or when the
    tokenizer itself puts BOS first on plain encoding (Llama 3's post-processor, Gemma's
    ``add_bos_token``); off otherwise (SmolLM2's tokenizer adds none, and the model predicts
    better without it).
    """
    model_type = str(getattr(config, "model_type", "") or "")
    if model_type.startswith(BOS_FAMILIES):
        return tokenizer.bos_token_id is not None
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos
