"""Where an FFN layer's output weights live: the Hugging Face parameter behind the bridge's view."""

from __future__ import annotations

import torch

from workbench.session import Session

from ._prompts import EditError, check_edit_layer

__all__ = ["live_w_out"]


def live_w_out(session: Session, layer: int) -> tuple[str, torch.nn.Parameter, bool]:
    """(name, HF parameter, transposed) that `blocks[layer].mlp.W_out` is a view of."""
    layer = check_edit_layer(session, layer)
    view = session.model.blocks[layer].mlp.W_out
    ptr = view.data_ptr()
    for name, p in session.hf_model.named_parameters():
        if p.data_ptr() == ptr and p.numel() == view.numel():
            if tuple(p.shape) == tuple(view.shape):
                return name, p, False
            if tuple(p.shape) == tuple(view.shape[::-1]):
                return name, p, True
    raise EditError(f"layer {layer}: W_out shares storage with no model parameter; "
                    "the edit would not reach the model")
