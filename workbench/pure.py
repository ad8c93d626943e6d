"""The pure Hugging Face view of a session's model: same weights, no bridge wrappers.

The TransformerBridge splices a Python wrapper (with dozens of hook points) around every
Hugging Face submodule; its Python defeats CUDA graphs and torch.compile and costs 2-3x in
launch-bound forwards. `pure_model` returns a shallow copy of the HF module tree with every
bridge component replaced by its `_original_component`. The copy shares every Parameter and
buffer with the session (in-place weight edits are seen at once), has its own hook tables
(nothing registered on it leaks into the session) and its own config copy with SDPA attention
(the bridge forces eager attention to expose patterns). The fast capture trunk asks for
`CAUSAL_ATTN` instead: SDPA that gives full-attention layers `is_causal` and no mask, which keeps
the flash kernel under torch.compile (37% of bf16 peak at 32x512 on an H200 against 30% with
the materialised mask; docs/GPU.md, session 16).

`pure_view` caches one view per session *on the session* (`Session.owned`), so closing the
session drops it; no module-level table holds a session.
"""

from __future__ import annotations

import copy

from torch import nn

from .session import Session

__all__ = ["pure_model", "pure_view", "pure_name", "CAUSAL_ATTN"]

CAUSAL_ATTN = "workbench_causal"


def _register_causal() -> None:
    """Make `CAUSAL_ATTN` known to transformers (on first use: importing its modelling code at
    `import workbench` would slow every command line start)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    def causal_sdpa(module: nn.Module, query, key, value, attention_mask, **kwargs):
        """SDPA for a cache-free forward without a padding mask: a full causal layer drops the mask.

        Hugging Face materialises the causal mask under torch.compile (torch < 2.14 cannot
        prove it is skippable while tracing), and SDPA with an explicit mask takes neither the
        flash kernel nor GQA without copying K and V per query head. For a forward whose only
        mask is the causal triangle, `is_causal=True` with no mask is the same attention
        (sliding-window layers keep their mask). Only `pure_model(..., attn=CAUSAL_ATTN)` views
        use it; their callers (`workbench.fastpath`'s trunk) never pass a padding mask or a cache.
        """
        if getattr(module, "sliding_window", None) is None:
            attention_mask = None
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(CAUSAL_ATTN, causal_sdpa)
    AttentionMaskInterface.register(CAUSAL_ATTN, sdpa_mask)


HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
              "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
              "_backward_pre_hooks")


def _unwrap(m: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    """Shallow copy of `m` with bridge components replaced by their original HF modules."""
    if id(m) in memo:
        return memo[id(m)]
    base = m
    while (orig := getattr(base, "_original_component", None)) is not None:
        base = orig
    c = copy.copy(base)  # shares _parameters / _buffers dicts: same weights, same edits
    memo[id(m)] = c
    for name in HOOK_DICTS:
        if name in c.__dict__:
            c.__dict__[name] = type(c.__dict__[name])()
    c.__dict__["_modules"] = {k: (_unwrap(v, memo) if v is not None else None)
                              for k, v in base._modules.items() if k != "_original_component"}
    return c


def pure_model(session: Session, attn: str = "sdpa") -> nn.Module:
    """A private hook-free Hugging Face view of `session.hf_model` (shared weights).

    Args:
        attn: the attention implementation of the copy: ``sdpa``, ``eager``, or `CAUSAL_ATTN`
            (SDPA that drops the causal mask of full-attention layers: only for forwards
            without a padding mask or cache).
    """
    if attn == CAUSAL_ATTN:
        _register_causal()
    pure = _unwrap(session.hf_model, {})
    cfg = copy.copy(session.hf_model.config)
    cfg._attn_implementation = attn
    for mod in pure.modules():
        if getattr(mod, "config", None) is session.hf_model.config:
            mod.config = cfg
    return pure


def pure_view(session: Session) -> nn.Module:
    """`pure_model(session)` (SDPA), made once per session and HF model and then reused.

    For analyses that run many plain forward or generate calls (ROME's v* optimisation, fluency
    generation): none of the bridge's per-module Python, same weights, same edits. Kept in
    `session.owned`, so `Session.close()` frees it.
    """
    got = session.owned.get("pure_view")
    if got is None or got[0] is not session.hf_model:
        got = session.owned["pure_view"] = (session.hf_model, pure_model(session))
    return got[1]


def pure_name(name: str) -> str:
    """A parameter or module name of `session.hf_model` as it reads in the pure view."""
    return name.replace("._original_component", "")
