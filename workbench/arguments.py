"""Command-line arguments every subcommand shares, checked before any model loads.

Lives in the library so that each package's commands use the same flags and the same checks;
it imports no face and no torch (a bad flag fails in well under a second):

- `add_model_args` / `check_model`: ``--model`` (an embedded name, a model directory, a
  ``.gguf`` file, or a hub name found in the local Hugging Face cache), ``--device``,
  ``--dtype``; `check_model` returns the model's shape (`ModelFacts`) read from its config or
  GGUF header, so layer flags are checked against it before the load.
- `add_prompt_args` / `prompt_of`: the prompt, as a positional argument or as ``--prompt``.
- `check_layers`, `check_path`, `check_positive`: one clear error naming the flag, the value and
  the valid range.
- `add_lens_arg` / `check_lens`: ``--lens logit|tuned|jacobian``, the lens a command reads
  residuals and directions through (`workbench.lenses`; the same flag everywhere).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from .errors import (
    EmptyPromptError,
    LayerOutOfRange,
    ShapeError,
    UnknownModelError,
    WorkbenchError,
    choices,
)
from .models import DEFAULT_MODEL, EMBEDDED, cache_root

__all__ = ["ModelFacts", "LENS_KINDS", "add_lens_arg", "add_model_args", "add_prompt_args", "check_layers",
           "check_lens", "check_model", "check_path", "check_positive", "load_session", "model_facts",
           "prompt_of"]

DTYPES = ("auto", "float32", "bfloat16", "float16")
LENS_KINDS = ("logit", "tuned", "jacobian")   # workbench.lenses.LENS_KINDS (no torch import here)


@dataclass(frozen=True)
class ModelFacts:
    """A model's shape as its files state it (no weights read).

    Args:
        name: the name or path given. n_layers, d_mlp: blocks and FFN width.
        n_ctx: the longest context the config allows (None when it does not say).
    """

    name: str
    n_layers: int
    d_mlp: int
    n_ctx: int | None


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"embedded name ({', '.join(EMBEDDED)}), a model directory, a .gguf file, "
                        "or a hub name in the local Hugging Face cache")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights' dtype (auto: bf16 on CUDA where supported, float32 on CPU)")


def add_prompt_args(p: argparse.ArgumentParser, what: str = "the prompt") -> None:
    """The prompt as a positional argument or as ``--prompt`` (the same in every command)."""
    p.add_argument("prompt_pos", nargs="?", default=None, metavar="PROMPT",
                   help=f"{what} (or give it as --prompt)")
    p.add_argument("--prompt", default=None, help=f"{what} (same as the positional PROMPT)")


@overload
def prompt_of(args: argparse.Namespace, required: Literal[True] = True) -> str: ...
@overload
def prompt_of(args: argparse.Namespace, required: Literal[False]) -> str | None: ...
def prompt_of(args: argparse.Namespace, required: bool = True) -> str | None:
    """The prompt given positionally or with ``--prompt``; an error if both differ or it is blank."""
    pos, opt = getattr(args, "prompt_pos", None), getattr(args, "prompt", None)
    if pos is not None and opt is not None and pos != opt:
        raise WorkbenchError(f"two prompts given: positional {pos!r} and --prompt {opt!r}; give one")
    prompt = opt if opt is not None else pos
    if prompt is None:
        if required:
            raise EmptyPromptError("no prompt given; pass it as the first argument or with --prompt")
        return None
    if not prompt.strip():
        raise EmptyPromptError(f"prompt={prompt!r} is empty; give some text")
    return prompt


def _config_facts(name: str, cfg: dict) -> ModelFacts:
    c = cfg.get("text_config") or cfg
    try:
        return ModelFacts(name, int(c["num_hidden_layers"]), int(c["intermediate_size"]),
                          c.get("max_position_embeddings"))
    except KeyError as exc:
        raise UnknownModelError(f"model={name!r}: its config.json has no {exc.args[0]!r}; is it a "
                                "decoder-only transformer directory?") from None


def _gguf_facts(name: str, path: Path) -> ModelFacts:
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def field(key: str):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    n, d = field(f"{arch}.block_count"), field(f"{arch}.feed_forward_length")
    if n is None or d is None:
        raise UnknownModelError(f"model={name!r}: the GGUF header names no block count / FFN width "
                                f"for architecture {arch!r}")
    ctx = field(f"{arch}.context_length")
    return ModelFacts(name, int(n), int(d), None if ctx is None else int(ctx))


def model_facts(name: str) -> ModelFacts | None:
    """The shape of model `name` from its config or GGUF header, or an `UnknownModelError`.

    Offline (the default), a name that is neither embedded, a path, nor a hub name already in the
    local Hugging Face cache fails at once, listing the embedded names. With the hub explicitly
    online (HF_HUB_OFFLINE=0) an uncached hub name gives None: its shape is known once it loads.
    """
    if name in EMBEDDED:
        cached = cache_root() / "models" / name / "config.json"
        if cached.exists():
            return _config_facts(name, json.loads(cached.read_text()))
        return _gguf_facts(name, EMBEDDED[name].gguf_path())
    path = Path(name).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.exists():
            raise UnknownModelError(f"model={name!r} is a directory without config.json; give a "
                                    "Hugging Face model directory")
        return _config_facts(name, json.loads(cfg.read_text()))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UnknownModelError(f"model={name!r} is a file but not a .gguf file; give a model "
                                    f"directory, a GGUF file or an embedded name ({choices(EMBEDDED)})")
        return _gguf_facts(name, path)
    embedded = f"embedded models are {choices(EMBEDDED)}"
    if "/" not in name or name.startswith((".", "/", "~")):
        raise UnknownModelError(f"model={name!r} is not an embedded name, a model directory or a "
                                f".gguf file; {embedded}")
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(name, "config.json")
    if isinstance(hit, str):
        return _config_facts(name, json.loads(Path(hit).read_text()))
    if os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False"):
        raise UnknownModelError(f"model={name!r} is not in the local Hugging Face cache and the hub "
                                f"is offline (HF_HUB_OFFLINE); {embedded}, or give a model directory")
    return None  # online hub name: its shape is known once it loads


def check_model(args: argparse.Namespace) -> ModelFacts | None:
    """Check ``--model``, ``--device`` and ``--dtype`` without loading; returns the model's shape."""
    dev = str(getattr(args, "device", "auto"))
    base = dev.split(":")[0]
    if base not in ("auto", "cpu", "cuda", "mps") or (":" in dev and not dev.split(":")[1].isdigit()):
        raise WorkbenchError(f"--device={dev!r} is not a device; use auto, cpu, cuda or cuda:N")
    return model_facts(args.model)


def check_layers(facts: ModelFacts | None, layers: Iterable[int] | None, flag: str = "--layer") -> None:
    """Every layer in `layers` within 0..n_layers-1, else one error naming the flag and the range
    (no check without facts: the session checks once it has loaded)."""
    if facts is None:
        return
    for layer in layers or ():
        if not 0 <= int(layer) < facts.n_layers:
            raise LayerOutOfRange(f"{flag}={layer} is out of range; {facts.name} has {facts.n_layers} "
                                  f"layers (0..{facts.n_layers - 1})")


def check_path(path: str | None, flag: str, kind: str = "any") -> Path | None:
    """An existing file (`kind='file'`), directory (`'dir'`) or either; None passes through."""
    if path is None:
        return None
    p = Path(path).expanduser()
    ok = {"file": p.is_file, "dir": p.is_dir, "any": p.exists}[kind]()
    if not ok:
        what = {"file": "file", "dir": "directory", "any": "file or directory"}[kind]
        raise WorkbenchError(f"{flag}={path!r} does not exist (expected a {what})")
    return p


def check_positive(**values: float | int | None) -> None:
    """Each named value (flag name without dashes, underscores for dashes) must be > 0."""
    for name, v in values.items():
        if v is not None and not v > 0:
            raise ShapeError(f"--{name.replace('_', '-')}={v} must be > 0")


def add_lens_arg(p: argparse.ArgumentParser, what: str = "directions are read") -> None:
    p.add_argument("--lens", default="logit",
                   help=f"the lens {what} through: {', '.join(LENS_KINDS)} (tuned / jacobian: the "
                        "lens saved for the model, see workbench lens-train)")


def check_lens(kind: str, flag: str = "--lens") -> str:
    """`kind` if it is a lens kind, else one error naming the flag and the choices."""
    if kind not in LENS_KINDS:
        raise WorkbenchError(f"{flag}={kind!r} is not a lens; choose one of {choices(LENS_KINDS)}")
    return kind


def load_session(args: argparse.Namespace):
    from .session import Session

    return Session.load(args.model, device=args.device, dtype=args.dtype)
