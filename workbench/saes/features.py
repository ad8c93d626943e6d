"""Codes and features: encode prompts per token, harvest top-activating corpus tokens per latent,
activation histograms, and the decoder row read in the vocabulary.

Decoder direction d_i in the residual basis: the row itself for d_model-wide sites; mapped by
the FFN values (d_i @ W_out) for mlp_pre/mlp_post; by W_O[h] for attn_z of head h. It is read
as logits by the logit-lens convention `session.unembed` (final norm, then W_U), or through a
tuned / Jacobian lens's linear part at the block that writes it (`lens_layer`; the tuned lens's
bias is left out: a decoder row is a direction, `workbench.lenses.direction_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .._types import Float, Int, Tensor
from ..capture import capture
from ..errors import ShapeError, WorkbenchError, check_index
from ..hooks import Site
from ..lenses import LensReader, as_reader, direction_logits
from ..session import Session
from ..topk import StreamingTopK
from .sites import check_sae_site, to_vectors
from .splice import FeatureOutOfRange

__all__ = ["PromptCodes", "FeatureHarvest", "VocabReading", "encode_prompts", "harvest_features",
           "feature_contexts", "decoder_directions", "decoder_vocab", "lens_layer", "HIST_EDGES"]

HIST_EDGES = torch.linspace(-3, 3, 49)  # log10 activation bins for the histograms


@dataclass(frozen=True)
class PromptCodes:
    """Per-token codes of a batch of prompts ([batch pos d_sae]; padding rows are zero)."""

    codes: Float[Tensor, "batch pos d_sae"]
    str_tokens: tuple[tuple[str, ...], ...]
    lengths: Int[Tensor, " batch"]

    def top(self, row: int, pos: int, k: int = 5) -> list[tuple[int, float]]:
        v, i = self.codes[row, pos].topk(k)
        return [(int(a), float(b)) for a, b in zip(i, v) if b > 0]


@dataclass(frozen=True)
class FeatureHarvest:
    """Per feature: top activations and their corpus offsets, firing frequency, histogram.

    Args:
        features: [F] latent ids harvested.
        top_values, top_offsets: [F k] best first (offset -1 where fewer than k fired).
        frequencies: [F] share of harvested tokens where the latent fired.
        histograms: [F bins] counts of log10(activation) over HIST_EDGES (nonzero only).
        n_tokens: tokens scanned.
    """

    features: Int[Tensor, " F"]
    top_values: Float[Tensor, "F k"]
    top_offsets: Int[Tensor, "F k"]
    frequencies: Float[Tensor, " F"]
    histograms: Float[Tensor, "F bins"]
    n_tokens: int
    edges: Tensor = field(default_factory=lambda: HIST_EDGES.clone())

    def index(self, feature: int) -> int:
        hits = (self.features == int(feature)).nonzero()
        if len(hits) == 0:
            raise FeatureOutOfRange(f"feature={feature} was not harvested; harvested: "
                                    f"{self.features[:12].tolist()}...")
        return int(hits[0, 0])


@dataclass(frozen=True)
class VocabReading:
    """Top and bottom tokens of a decoder direction read through the unembedding."""

    feature: int
    top_tokens: tuple[str, ...]
    top_logits: tuple[float, ...]
    bottom_tokens: tuple[str, ...]
    bottom_logits: tuple[float, ...]


@torch.no_grad()
def encode_prompts(session: Session, sae, prompts: str | Sequence[str]) -> PromptCodes:
    """Encode every real token of `prompts` into SAE codes."""
    site = check_sae_site(session, sae)
    cap = capture(session, prompts, [site])
    x = to_vectors(cap[site], site, sae.cfg.head).to(sae.W_enc.device)
    codes = sae.encode(x) * cap.mask[..., None].to(x.device)
    return PromptCodes(codes, cap.batch.str_tokens, cap.batch.lengths)


@torch.no_grad()
def harvest_features(session: Session, sae, corpus, features: Sequence[int] | None = None, k: int = 10,
                     max_tokens: int = 65536, window: int = 64, tokens_per_batch: int = 4096,
                     progress: bool = True) -> FeatureHarvest:
    """Stream `corpus`; per latent keep the `k` top activations (streaming top-k), count firing,
    and histogram log10 of nonzero activations."""
    site = check_sae_site(session, sae)
    feats = torch.arange(sae.d_sae) if features is None else torch.as_tensor(list(features))
    for f in feats.tolist():
        check_index(f, sae.d_sae, "feature", FeatureOutOfRange)
    dev = sae.W_enc.device
    fidx = feats.to(dev)
    tk = StreamingTopK(len(feats), k, device=dev)
    counts = torch.zeros(len(feats), device=dev)
    edges = HIST_EDGES.to(dev)
    hist = torch.zeros(len(feats), len(edges) - 1, device=dev)
    start = 1 if sae.cfg.skip_first_position else 0
    n = 0
    for wb in tqdm(corpus.batches(session, window=window, tokens_per_batch=tokens_per_batch,
                                  max_tokens=max_tokens, progress=False),
                   desc="features", disable=not progress, leave=False):
        from ..capture import capture_tokens
        from ..session import TokenBatch

        batch = TokenBatch(wb.tokens, torch.full((len(wb.tokens),), wb.tokens.shape[1]))
        act = to_vectors(capture_tokens(session, batch, [site])[site], site, sae.cfg.head)
        off = wb.offsets()[:, start:].reshape(-1)
        x = act[:, start:].reshape(-1, sae.d_in).to(dev, sae.W_enc.dtype)
        keep = off >= 0
        codes = sae.encode(x[keep.to(dev)])[:, fidx]
        off = off[keep]
        tk.update(codes, off)
        active = codes > 0
        counts += active.sum(0)
        lv = torch.log10(codes.clamp_min(1e-30))
        b = torch.bucketize(lv, edges[1:-1])
        hist += torch.zeros_like(hist).scatter_add_(
            1, b.T.contiguous(), active.T.float().contiguous())
        n += len(x)
    if n == 0:
        raise ShapeError("the corpus gave no tokens to harvest")
    vals, ids = tk.values.cpu(), tk.ids.cpu()
    ids[~torch.isfinite(vals) | (vals <= 0)] = -1
    return FeatureHarvest(feats, vals.clamp_min(0), ids, (counts / n).cpu(), hist.cpu(), n)


def feature_contexts(corpus, harvest: FeatureHarvest, feature: int, before: int = 16,
                     after: int = 2) -> list[dict]:
    """The top-activating tokens of `feature` with their text context."""
    i = harvest.index(feature)
    rows = []
    for v, off in zip(harvest.top_values[i].tolist(), harvest.top_offsets[i].tolist()):
        if off < 0:
            continue
        pre, tok, post = corpus.context(int(off), before=before, after=after)
        rows.append({"value": v, "offset": int(off), "before": pre, "token": tok, "after": post})
    return rows


def decoder_directions(session: Session, sae) -> Float[Tensor, "d_sae d_model"]:
    """Decoder rows in the residual basis (see module doc)."""
    site = check_sae_site(session, sae)
    W = sae.W_dec.detach()
    if site.kind in ("mlp_pre", "mlp_post"):
        from ..ffn import ffn_weights

        return W.to(session.dtype) @ ffn_weights(session, site.layer).values.to(W.device)
    if site.kind == "attn_z":
        if sae.cfg.head is None:
            W_O = session.model.blocks[site.layer].attn.W_O  # [head d_head d_model]
            return W.to(session.dtype) @ W_O.reshape(-1, W_O.shape[-1]).to(W.device)
        return W.to(session.dtype) @ session.model.blocks[site.layer].attn.W_O[sae.cfg.head].to(W.device)
    if site.kind == "head_out" and sae.cfg.head is None:
        return W.reshape(sae.d_sae, session.n_heads, -1).sum(1)
    return W


def lens_layer(site: Site) -> int:
    """The block whose residual output a direction at `site` is part of: the block before for
    ``resid_pre`` (raises at layer 0: the embeddings precede every lens layer), else its own."""
    if site.kind != "resid_pre":
        return site.layer
    if site.layer == 0:
        raise WorkbenchError("a direction at resid_pre:0 (the embeddings) is read before any "
                             "block; a tuned or Jacobian lens has no layer for it; use lens='logit'")
    return site.layer - 1


@torch.no_grad()
def decoder_vocab(session: Session, sae, feature: int, k: int = 10,
                  lens: str | LensReader = "logit") -> VocabReading:
    """Read decoder direction `feature` in the vocabulary: unembed(d_i) (logit lens), or
    unembed(L_l d_i) through `lens`'s linear part at `lens_layer` of the SAE's site."""
    check_index(feature, sae.d_sae, "feature", FeatureOutOfRange)
    site = check_sae_site(session, sae)
    d = decoder_directions(session, sae)[int(feature)].to(session.device)
    if isinstance(lens, str) and lens == "logit":
        logits = session.unembed(d[None])[0].float()
    else:
        logits = direction_logits(session, d[None], lens_layer(site), as_reader(session, lens))[0].float()
    tv, ti = logits.topk(k)
    bv, bi = (-logits).topk(k)
    return VocabReading(int(feature), tuple(session.to_str_tokens(ti)), tuple(tv.tolist()),
                        tuple(session.to_str_tokens(bi)), tuple((-bv).tolist()))
