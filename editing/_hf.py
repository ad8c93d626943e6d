"""The session's pure Hugging Face view, typed as the causal LM it is.

`workbench.pure.pure_view` is declared to return an `nn.Module` (it copies any module tree), so
attribute access on it types as ``Tensor | Module``. For a session it is a shallow copy of
`session.hf_model`, a transformers causal LM: `pure_lm` says so, `pure_generator` gives the same
view as the `GenerationMixin` it also is (both checked at run time under the suite's
jaxtyping/beartype hook), `trunk_layer` reaches a decoder block by dotted name, and `logits_at`
runs the trunk and the output head at chosen positions only.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel

from workbench._types import Float, Tensor
from workbench.pure import pure_view
from workbench.session import Session

__all__ = ["logits_at", "pure_generator", "pure_lm", "trunk_layer"]


def pure_lm(session: Session) -> PreTrainedModel:
    """`pure_view(session)` (shared weights, no bridge wrappers, SDPA) as a `PreTrainedModel`."""
    return cast(PreTrainedModel, pure_view(session))


def pure_generator(session: Session) -> GenerationMixin:
    """The same view as `pure_lm`, typed for ``.generate`` (causal LMs mix in `GenerationMixin`)."""
    return cast(GenerationMixin, pure_view(session))


def trunk_layer(hf: PreTrainedModel, layer: int) -> nn.Module:
    """Decoder block `layer` of the trunk (``hf.base_model.layers[layer]``)."""
    return hf.base_model.get_submodule(f"layers.{layer}")


def logits_at(session: Session, tokens: Tensor, rows: Tensor, cols: Tensor) -> Float[Tensor, "n d_vocab"]:
    """float32 logits at positions (rows[i], cols[i]) of `tokens` [batch pos]: the pure view's
    trunk, then the output head (and the model's logit soft-cap) there only.

    What the bridge computes, within float tolerance (SDPA attention). Right padding needs no
    attention mask (causal attention never looks right). Forward hooks on the trunk's blocks
    apply (the view shares the session's modules).
    """
    hf = pure_lm(session)
    h = hf.base_model(input_ids=tokens, use_cache=False).last_hidden_state[rows, cols]
    logits = hf.get_output_embeddings()(h).float()
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
