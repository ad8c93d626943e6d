"""Direct effects on one target logit: the embedding, every attention and every FFN sublayer.

At the last prompt position the final residual stream is a sum of what each part writes into
it (`hooks.Site` kinds ``resid_pre:0``, ``attn_resid:l``, ``mlp_resid:l``):

    h = e + sum_l a_l + sum_l f_l                                   [d_model]

where ``a_l`` and ``f_l`` are what REACHES the residual: on Gemma (post-norm blocks) the
outputs of the post-attention and post-FFN norms, on Llama-style models the raw sublayer
outputs (there the two are the same tensor). The final RMSNorm is ``N(h) = c(h) * g ⊙ h`` with
the gain ``g`` [d_model] and the scalar ``c(h) = 1 / sqrt(mean(h²) + eps)``. Freezing ``c`` at
the value of the real forward makes it linear, so the target's pre-cap logit splits exactly:

    z_t = u_t · N(h) + b_t = u_t · (c g ⊙ e) + sum_l u_t · (c g ⊙ a_l)
                               + sum_l u_t · (c g ⊙ f_l) + b_t,      u_t = W_U[:, t]

``b_t`` is the unembedding bias (0 on the embedded models). A model with a final logit
soft-cap (Gemma 2: ``logit = cap * tanh(z / cap)``) gets the split of ``z_t``; its final logit
is ``cap * tanh(sum)``, so there the effects add up to the pre-cap logit exactly and the final
logit is a fixed monotone function of that sum. Gemma 3 and SmolLM2 have no soft-cap: the
effects add up to the final logit itself (to float rounding).

Example:
    >>> r = direct_effects(s, "The Eiffel Tower is located in the city of", " Paris")
    >>> r.total, r.logit                 # equal
    >>> max(range(s.n_layers), key=lambda l: r.ffn[l])   # the FFN layer that writes most
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ._types import Float, Tensor
from .capture import capture
from .errors import TokenError, WorkbenchError
from .hooks import Site
from .session import Session

__all__ = ["DirectEffects", "direct_effects", "norm_gain"]

_PROBE = 1000.0  # rms of the probe vector used to read the norm's gain (eps-free to 1e-12)


@dataclass(frozen=True)
class DirectEffects:
    """Per-part direct effects on one target logit at the last prompt position.

    Args:
        prompt: the prompt; target, target_id: the target token (text and id).
        position: index of the last prompt token (where the logit is read).
        embedding: the token (and position) embedding's effect.
        attn: [n_layers] each attention sublayer's effect (what reaches the residual).
        ffn: [n_layers] each FFN sublayer's effect (what reaches the residual).
        bias: the unembedding bias of the target (0.0 when the model has none).
        norm_scale: the frozen final-norm scale c(h) = 1 / rms(h).
        logit: the model's own final logit of the target (after any soft-cap).
        softcap: the model's final logit soft-cap, or None.
    """

    prompt: str
    target: str
    target_id: int
    position: int
    embedding: float
    attn: tuple[float, ...]
    ffn: tuple[float, ...]
    bias: float
    norm_scale: float
    logit: float
    softcap: float | None

    @property
    def total(self) -> float:
        """embedding + sum(attn) + sum(ffn) + bias: the pre-cap logit."""
        return self.embedding + math.fsum(self.attn) + math.fsum(self.ffn) + self.bias

    @property
    def reconstructed_logit(self) -> float:
        """`total` through the model's soft-cap (itself when there is none): equals `logit`."""
        if self.softcap is None:
            return self.total
        return self.softcap * math.tanh(self.total / self.softcap)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attn"], d["ffn"] = list(self.attn), list(self.ffn)
        d["total"] = self.total
        d["reconstructed_logit"] = self.reconstructed_logit
        return d


def _softcap(session: Session) -> float | None:
    cfg = getattr(session.hf_model, "config", None)
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


@torch.no_grad()
def norm_gain(session: Session) -> Float[Tensor, " d_model"]:
    """The final RMSNorm's elementwise gain g (Gemma: 1 + w), read off the norm itself.

    N(x) = c(x) g ⊙ x with c(x) = 1/sqrt(mean(x²) + eps); for x = 1000·1, c·1000 = 1/sqrt(1 + eps/1e6),
    so g = N(x) to a relative 1e-12 for any eps below 1e-5.
    """
    x = torch.full((session.d_model,), _PROBE, device=session.device, dtype=session.dtype)
    return session.final_norm(x).double()


@torch.no_grad()
def direct_effects(session: Session, prompt: str, target: str | int) -> DirectEffects:
    """Direct effects of the embedding, each attention and each FFN on `target`'s logit.

    Args:
        prompt: one non-empty prompt; the logit is read at its last token.
        target: a string that is exactly one token (mind the leading space: " Paris"), or an id.

    Raises TokenError for a target that is not one token or an id out of range, the session's
    own errors for a bad prompt, and WorkbenchError when the model's final norm is not an
    RMSNorm (the split needs N(h) = c(h) g ⊙ h).
    """
    if not isinstance(prompt, str):
        raise TokenError(f"prompt={prompt!r} must be one string")
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise TokenError(f"target={target!r} must be a one-token string or a token id")
    if isinstance(target, int):
        if not 0 <= target < session.d_vocab:
            raise TokenError(f"target id={target} is out of range; the vocabulary has "
                             f"{session.d_vocab} tokens (0..{session.d_vocab - 1})")
        t = target
    else:
        t = session.token_id(target)
    L = session.n_layers
    sites = ([Site("resid_pre", 0), Site("resid_post", L - 1)]
             + [Site("attn_resid", layer) for layer in range(L)]
             + [Site("mlp_resid", layer) for layer in range(L)])
    cap = capture(session, prompt, sites, logits=True)
    pos = int(cap.batch.lengths[0]) - 1

    def at(kind: str, layer: int) -> Tensor:
        return cap[Site(kind, layer)][0, pos].double()

    h = at("resid_post", L - 1)
    normed = session.final_norm(cap[Site("resid_post", L - 1)][0, pos]).double()
    g = norm_gain(session)
    gh = g * h
    c = float(normed @ gh / (gh @ gh))             # least squares: normed = c g ⊙ h
    if not torch.allclose(normed, c * gh, rtol=1e-4, atol=1e-5 * float(normed.abs().max())):
        raise WorkbenchError("the model's final norm is not an RMSNorm (N(h) != c g ⊙ h); "
                             "direct effects through it are not defined here")
    u = session.W_U[:, t].double().to(h.device) * (c * g)   # the frozen read-out direction
    zero = torch.zeros(session.d_model, device=session.device, dtype=session.dtype)
    b = float(session.unembed_normed(zero)[t])
    cap_value = _softcap(session)
    if cap_value is not None:
        b = cap_value * math.atanh(max(min(b / cap_value, 1 - 1e-12), -1 + 1e-12))
    logit = float(cap.need_logits()[0, pos, t])
    return DirectEffects(
        prompt=prompt, target=session.tokenizer.decode([t]), target_id=t, position=pos,
        embedding=float(u @ at("resid_pre", 0)),
        attn=tuple(float(u @ at("attn_resid", layer)) for layer in range(L)),
        ffn=tuple(float(u @ at("mlp_resid", layer)) for layer in range(L)),
        bias=b, norm_scale=c, logit=logit, softcap=cap_value)
