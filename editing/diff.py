"""Edit diff: what a rank-one edit changed in the model's memories and predictions.

Three views of W_out' = W_out + u r^T at layer l:

1. The inserted value r = v* - v in the vocabulary: unembed(L_l r) with L_l the chosen lens's
   linear part at layer l (the identity for the logit lens: final norm, then W_U; the tuned
   lens's bias is left out, r being a direction: `workbench.lenses.direction_logits`). The units'
   values before and after and the neighbours' FFN outputs are read the same way.
2. Memories near k*: the FFN units i with the largest |k*_i| (the unit keys e_i most similar to
   the subject key) and, given a corpus, the tokens whose keys k are most similar to k* (cosine).
   Unit i's value moves v_i -> v_i + u_i r; a token's FFN output moves by (u . k) r.
3. Logit lens of the edited prompt at its last token, every layer, before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.capture import capture, capture_tokens
from workbench.hooks import Site
from workbench.lenses import LensReader, as_reader, direction_logits, kind_of
from workbench.session import Session, TokenBatch
from workbench.vocab import top_tokens

from ._prompts import fill
from .apply import apply
from .requests import RankOneUpdate

__all__ = ["EditDiff", "edit_diff"]


@dataclass(frozen=True)
class EditDiff:
    """Result of `edit_diff` (plain lists, ready for JSON).

    Args:
        layer: the edited block; prompt: the edited prompt; target: the new token.
        value_tokens: [(token, logit)] top tokens of the inserted value r.
        units: per unit near k*: unit, k_star (its coefficient), u, shift (|u_i r|),
            top tokens of the value before and after.
        neighbours: per corpus token with a key near k*: context, token, cosine, gain (u . k),
            top token of its FFN output before and after.
        lens: per layer: top token and p(target) before and after (logit lens of resid_post).
        reading: the lens the directions (r, values, FFN outputs) were read through.
    """

    layer: int
    prompt: str
    target: str
    value_tokens: list[tuple[str, float]]
    units: list[dict]
    lens: list[dict]
    neighbours: list[dict] = field(default_factory=list)
    reading: str = "logit"

    def to_dict(self) -> dict:
        return {"layer": self.layer, "prompt": self.prompt, "target": self.target,
                "value_tokens": [list(t) for t in self.value_tokens], "units": self.units,
                "neighbours": self.neighbours, "lens": self.lens, "reading": self.reading}


def _top(session: Session, vec: torch.Tensor, k: int, layer: int, reader: LensReader) -> list[tuple[str, float]]:
    """Top tokens of a direction written at `layer` by the workbench's vocabulary reading
    (`workbench.lenses.direction_logits`; the logit lens: `workbench.vocab`)."""
    logits = direction_logits(session, vec.to(session.device, session.dtype), layer, reader).float()
    return [(t.token, t.score) for t in top_tokens(session, logits, k)]


@torch.no_grad()
def edit_diff(session: Session, update: RankOneUpdate, top_k: int = 10, n_units: int = 10,
              corpus=None, n_tokens: int = 4096, n_neighbours: int = 10,
              lens: str | LensReader = "logit") -> EditDiff:
    """What `update` changes (applied temporarily and undone before returning); `lens` reads
    the directions (module docstring)."""
    layer = update.layer
    reader = as_reader(session, lens)
    W_out = session.model.blocks[layer].mlp.W_out.detach().float()
    u, r, k_star = update.u.float(), update.r.float(), update.k_star.float()
    value_tokens = _top(session, r, top_k, layer, reader)

    units = []
    for i in k_star.abs().topk(min(n_units, k_star.numel())).indices.tolist():
        v = W_out[i].cpu()
        units.append({"unit": i, "k_star": float(k_star[i]), "u": float(u[i]),
                      "shift": float((u[i] * r).norm()), "value_norm": float(v.norm()),
                      "before": [t for t, _ in _top(session, v, 5, layer, reader)],
                      "after": [t for t, _ in _top(session, v + u[i] * r, 5, layer, reader)]})

    prompt = fill(update.request.prompt, update.request.subject)
    sites = [Site("resid_post", ell) for ell in range(session.n_layers)]
    before = capture(session, [prompt], sites)
    with apply(session, update):
        after = capture(session, [prompt], sites)
    tid = update.target_id
    per_layer = []
    for ell in range(session.n_layers):
        row: dict[str, int | str | float] = {"layer": ell}
        for name, cap in (("before", before), ("after", after)):
            p = torch.softmax(session.unembed(cap[sites[ell]][0, -1]).float(), -1)
            row[f"top_{name}"] = session.tokenizer.decode([int(p.argmax())])
            row[f"p_target_{name}"] = float(p[tid])
        per_layer.append(row)

    neighbours = []
    if corpus is not None:
        site = Site("mlp_post", layer)
        keys, offs = [], []
        for wb in corpus.batches(session, window=128, tokens_per_batch=n_tokens, max_tokens=n_tokens,
                                 progress=False):
            lengths = torch.full((wb.tokens.shape[0],), wb.tokens.shape[1], device=wb.tokens.device)
            cap = capture_tokens(session, TokenBatch(wb.tokens, lengths), [site])
            keys.append(cap[site].reshape(-1, session.d_mlp).float().cpu())
            offs.append(wb.offsets().reshape(-1).cpu())
        K, offsets = torch.cat(keys), torch.cat(offs)
        ok = offsets >= 0
        K, offsets = K[ok], offsets[ok]
        cos = torch.nn.functional.cosine_similarity(K, k_star[None], dim=-1)
        for j in cos.topk(min(n_neighbours, len(cos))).indices.tolist():
            out0 = K[j] @ W_out.cpu()
            gain = float(K[j] @ u)
            ctx, tok, _ = corpus.context(int(offsets[j]), before=16)
            neighbours.append({"context": ctx, "token": tok, "cosine": float(cos[j]), "gain": gain,
                               "shift": abs(gain) * float(r.norm()),
                               "top_before": _top(session, out0, 1, layer, reader)[0][0],
                               "top_after": _top(session, out0 + gain * r, 1, layer, reader)[0][0]})
    return EditDiff(layer, prompt, session.tokenizer.decode([tid]), value_tokens, units,
                    per_layer, neighbours, kind_of(reader))
