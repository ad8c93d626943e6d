"""Tiny random models with a small saved tokenizer, for tests and GPU timing of real shapes.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained on a few lines of
built-in text and saved to a directory (TransformerLens reloads tokenizers by path).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .session import Session

__all__ = ["tiny_tokenizer", "tiny_session", "tiny_model_dir", "random_session", "SHAPES"]

_TEXT = """The quick brown fox jumps over the lazy dog. Paris is the capital of France.
Rome is the capital of Italy. The Eiffel Tower is located in the city of Paris.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 1999 2024. When Mary and John went to the store,
John gave a drink to Mary. def add(a, b): return a + b  # docstring
Alice plays the piano and Bob plays chess. Water boils at 100 degrees Celsius.
"""


def tiny_tokenizer(directory: str | Path | None = None, vocab_size: int = 512, add_bos: bool = False):
    """A byte-level BPE tokenizer trained on built-in text, saved to and loaded from a directory.

    `add_bos`: the tokenizer itself puts ``<bos>`` first when encoding (as Llama 3's does).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory or tempfile.mkdtemp(prefix="wb-tok-"))
    if not (directory / "tokenizer.json").exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<eos>", "<pad>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([_TEXT] * 4, trainer)
        if add_bos:
            tok.post_processor = processors.TemplateProcessing(
                single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                       pad_token="<pad>")
        fast.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def _tiny_hf(arch: str, tok, n_layers: int = 2, d_model: int = 64, d_mlp: int = 256, n_heads: int = 4,
             n_kv_heads: int = 2):
    """A random-init tiny Llama or Gemma 3 causal LM for `tok` (float32, eval mode)."""
    from transformers import PreTrainedConfig, PreTrainedModel

    cfg: PreTrainedConfig
    hf: PreTrainedModel
    vocab = len(tok)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp,
                          num_hidden_layers=n_layers, num_attention_heads=n_heads,
                          num_key_value_heads=n_kv_heads, max_position_embeddings=256,
                          tie_word_embeddings=True, **ids)
        hf = LlamaForCausalLM(cfg)
    elif arch == "gemma":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_mlp,
                               num_hidden_layers=n_layers, num_attention_heads=n_heads,
                               num_key_value_heads=n_kv_heads, head_dim=d_model // n_heads,
                               max_position_embeddings=256, sliding_window=32, **ids)
        hf = Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(f"arch={arch!r} is not one of 'llama', 'gemma'")
    hf.config.architectures = [type(hf).__name__]
    return hf.float().eval()


def tiny_session(arch: str = "llama", n_layers: int = 2, d_model: int = 64, d_mlp: int = 256,
                 n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0, prepend_bos: bool = False,
                 tokenizer_dir: str | Path | None = None, device: str = "cpu") -> Session:
    """A random-init Llama or Gemma 3 session with a tiny tokenizer (about 0.1 s to build)."""
    tok = tiny_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    hf = _tiny_hf(arch, tok, n_layers, d_model, d_mlp, n_heads, n_kv_heads)
    return Session.from_hf(hf, tok, name=f"tiny-{arch}", prepend_bos=prepend_bos, device=device)


def tiny_model_dir(directory: str | Path, arch: str = "llama", add_bos: bool = False,
                   dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """Save a tiny random model and its tokenizer as a Hugging Face directory (loading tests).

    `add_bos`: a tokenizer that puts BOS first itself (Llama 3 style); `dtype`: the dtype the
    weights and config are saved in.
    """
    directory = Path(directory)
    tok = tiny_tokenizer(directory / "_tok", add_bos=add_bos)
    torch.manual_seed(seed)
    hf = _tiny_hf(arch, tok).to(dtype)
    hf.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


SHAPES: dict[str, tuple[str, dict]] = {
    "tiny-gemma": ("gemma", dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 sliding_window=32, max_position_embeddings=1024)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                   max_position_embeddings=8192, tie_word_embeddings=True,
                                   rope_theta=100000.0)),
    "llama3.1-8b": ("llama", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                  max_position_embeddings=131072, tie_word_embeddings=False,
                                  rope_theta=500000.0)),
    "gemma3-12b": ("gemma", dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                                 num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
                                 head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                                 max_position_embeddings=131072, tie_word_embeddings=True)),
}


def random_session(shape: str = "smollm2-135m", device: str = "auto", dtype=torch.float32,
                   seed: int = 0) -> Session:
    """Random-init weights of a real model's shape (timing on a GPU without the real weights).

    Shapes: `SHAPES` (SmolLM2-135M, Llama-3.1-8B, Gemma-3-12B's text model). The weights are
    made directly on the device in `dtype` (an 8B model is not built on the CPU first).
    """
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedConfig,
        PreTrainedModel,
    )

    from .session import resolve_device

    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {sorted(SHAPES)}")
    arch, kw = SHAPES[shape]
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    dev = resolve_device(device)
    llama = arch == "llama"
    cfg: PreTrainedConfig = LlamaConfig(**kw, **ids) if llama else Gemma3TextConfig(**kw, **ids)
    cls: type[PreTrainedModel] = LlamaForCausalLM if llama else Gemma3ForCausalLM
    if shape == "smollm2-135m":  # built on the CPU as before: the same values on every device
        hf = cls(cfg).to(dtype)
    else:
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(dev):
                hf = cls(cfg)
        finally:
            torch.set_default_dtype(old)
        hf = hf.to(dtype)
    hf.config.architectures = [cls.__name__]
    return Session.from_hf(hf.eval(), tok, name=f"random-{shape}", device=str(dev),
                           prepend_bos=arch == "gemma")


def timing_session(device: str = "auto") -> tuple[Session, str]:
    """(session, label) for benches: random SmolLM2-shape weights in bf16 on CUDA (real weights
    stay on CPU machines), else the real default model in fp32, else random fp32 weights."""
    from .session import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return random_session(device=str(dev), dtype=torch.bfloat16), "random-smollm2 bf16"
    try:
        return Session.load(device="cpu"), "smollm2-135m fp32"
    except Exception:  # noqa: BLE001 - any load failure: time the random model instead
        return random_session(device="cpu"), "random-smollm2 fp32"


def sync(session: Session) -> None:
    """Wait for the session's device (timings)."""
    if session.device.type == "cuda":
        torch.cuda.synchronize(session.device)
