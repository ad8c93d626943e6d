"""A GGUF loader that needs only the `gguf` package for the weights (fallback path).

Reads a llama.cpp GGUF file with `gguf.GGUFReader`, dequantizes every tensor to float32 with
`gguf.quants.dequantize`, maps llama.cpp tensor names to Hugging Face names and undoes
llama.cpp's rotary row permutation of Q and K (Llama only), then builds the Hugging Face model
from a config derived from the GGUF metadata. Supported architectures: ``llama`` and
``gemma3``. The tokenizer comes from transformers' GGUF tokenizer conversion.

Used by `workbench.models` when transformers' own GGUF model loading fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedConfig, PreTrainedModel

from .errors import UnknownModelError

log = logging.getLogger(__name__)

__all__ = ["load_gguf", "gguf_state_dict"]

_LAYER_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_LLAMA_EXTRA = {"ffn_norm": "post_attention_layernorm"}
_GEMMA_EXTRA = {"post_attention_norm": "post_attention_layernorm",
                "ffn_norm": "pre_feedforward_layernorm",
                "post_ffw_norm": "post_feedforward_layernorm"}


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: [n*d/n/2*2, ...] pairs back to halves."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, -1).swapaxes(2, 1).reshape(w.shape)


def gguf_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(Hugging Face state dict in float32, GGUF metadata needed for the config)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "gemma3"):
        raise UnknownModelError(f"GGUF architecture={arch!r} is not supported by the fallback "
                                "loader; supported: 'llama', 'gemma3'")
    meta = {
        "arch": arch,
        "n_layers": int(_field(reader, f"{arch}.block_count")),
        "d_model": int(_field(reader, f"{arch}.embedding_length")),
        "d_mlp": int(_field(reader, f"{arch}.feed_forward_length")),
        "n_heads": int(_field(reader, f"{arch}.attention.head_count")),
        "n_kv_heads": int(_field(reader, f"{arch}.attention.head_count_kv")),
        "ctx": int(_field(reader, f"{arch}.context_length")),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "head_dim": _field(reader, f"{arch}.attention.key_length"),
        "sliding_window": _field(reader, f"{arch}.attention.sliding_window"),
        "bos": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    extra = _LLAMA_EXTRA if arch == "llama" else _GEMMA_EXTRA
    sd: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        arr = dequantize(t.data, t.tensor_type).reshape(list(reversed(t.shape.tolist())))
        w = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        name = t.name
        if name == "token_embd.weight":
            sd["model.embed_tokens.weight"] = w
            meta["vocab"] = w.shape[0]
            continue
        if name == "output_norm.weight":
            sd["model.norm.weight"] = w - 1.0 if arch == "gemma3" else w
            continue
        if name == "output.weight":
            sd["lm_head.weight"] = w
            continue
        parts = name.split(".")
        if parts[0] != "blk":
            log.warning("skipping GGUF tensor %s", name)
            continue
        layer, key = int(parts[1]), parts[2]
        hf = _LAYER_MAP.get(key) or extra.get(key)
        if hf is None:
            log.warning("skipping GGUF tensor %s", name)
            continue
        if arch == "llama" and key == "attn_q":
            w = unpermute_rotary(w, meta["n_heads"])
        elif arch == "llama" and key == "attn_k":
            w = unpermute_rotary(w, meta["n_kv_heads"])
        if arch == "gemma3" and key.endswith("norm"):
            w = w - 1.0  # llama.cpp stores Gemma's RMSNorm scale as (1 + w)
        sd[f"model.layers.{layer}.{hf}.weight"] = w
    return sd, meta


def _config(meta: dict) -> tuple[PreTrainedConfig, type[PreTrainedModel]]:
    common = dict(vocab_size=meta["vocab"], hidden_size=meta["d_model"], intermediate_size=meta["d_mlp"],
                  num_hidden_layers=meta["n_layers"], num_attention_heads=meta["n_heads"],
                  num_key_value_heads=meta["n_kv_heads"], max_position_embeddings=meta["ctx"],
                  rms_norm_eps=meta["eps"], bos_token_id=meta["bos"], eos_token_id=meta["eos"],
                  pad_token_id=meta["pad"], tie_word_embeddings=True)
    if meta["arch"] == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        rope = {"rope_type": "default", "rope_theta": meta["rope_theta"]}
        return LlamaConfig(**common, rope_parameters=rope), LlamaForCausalLM
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # Gemma 3: local (sliding) layers keep base 10k; the GGUF's theta is the global layers' one
    # (1M when the file carries the llama default 10k). Same as the legacy `rope_theta=` kwarg.
    theta = meta["rope_theta"] if meta["rope_theta"] != 10000.0 else 1_000_000.0
    gemma_rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                  "full_attention": {"rope_type": "default", "rope_theta": theta}}
    cfg = Gemma3TextConfig(**common, head_dim=int(meta["head_dim"] or meta["d_model"] // meta["n_heads"]),
                           sliding_window=int(meta["sliding_window"] or 512),
                           rope_parameters=gemma_rope)
    return cfg, Gemma3ForCausalLM


def load_gguf(path: str | Path):
    """(Hugging Face model in float32, tokenizer) from a GGUF file, weights via `gguf` alone."""
    from transformers import AutoTokenizer

    path = Path(path)
    sd, meta = gguf_state_dict(path)
    cfg, cls = _config(meta)
    model = cls(cfg)
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    else:
        model.config.tie_word_embeddings = False
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise UnknownModelError(f"GGUF {path.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.float().eval(), tok
