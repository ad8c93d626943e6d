"""The ``sae`` probe kind: quality metrics of a sparse autoencoder on the battery's corpus.

Either loads an SAE (``sae_path``: our layout or SAELens) or trains a small one on the
battery corpus at ``site`` (held-out windows kept apart by `workbench.saes.train_sae`). Reports
L0, FVU, MSE, dead and dense latents on held-out activations, and the next-token cross-entropy
with the site clean / replaced by the reconstruction / zeroed, with the loss recovered

    loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)

(`workbench.saes.metrics`).
"""

from __future__ import annotations

from .context import ProbeContext
from .registry import Param, SpecError, register_kind

__all__ = ["run_sae"]


def _check(params: dict, where: str) -> None:
    from workbench.errors import WorkbenchError
    from workbench.hooks import parse_site

    try:
        parse_site(params["site"])
    except (WorkbenchError, ValueError) as exc:
        raise SpecError(f"{where} site={params['site']!r}: {exc}") from None
    if params["architecture"] not in ("relu", "topk", "jumprelu"):
        raise SpecError(f"{where} architecture={params['architecture']!r} is not one of "
                        "'relu', 'topk', 'jumprelu'")
    for k in ("expansion", "k", "train_tokens", "eval_windows"):
        if params[k] < 1:
            raise SpecError(f"{where} {k}={params[k]} must be >= 1")


@register_kind(
    "sae",
    params={
        "site": Param(str, "resid_post:6", doc="hook site, e.g. 'resid_post:6'"),
        "sae_path": Param(str, "", doc="saved SAE directory; empty: train one on the corpus"),
        "architecture": Param(str, "topk", doc="relu, topk or jumprelu (when training)"),
        "expansion": Param(int, 4, doc="d_sae / d_in (when training)"),
        "k": Param(int, 32, doc="active latents per token (topk)"),
        "train_tokens": Param(int, 40000, doc="training vectors (repeats over the corpus allowed)"),
        "eval_windows": Param(int, 8, doc="corpus windows for the splice cross-entropies"),
    },
    doc="Sparse autoencoder quality: L0, fraction of variance unexplained, dead and dense "
        "latents on held-out tokens, and the share of next-token loss recovered when the SAE's "
        "reconstruction replaces the site.",
    check=_check,
)
def run_sae(ctx: ProbeContext, params: dict) -> dict:
    import torch

    from workbench.saes import (
        SAEConfig,
        TrainConfig,
        load_sae,
        reconstruction_metrics,
        splice_metrics,
        train_sae,
    )
    from workbench.saes.sites import site_d_in
    from workbench.saes.stream import stream_vectors, window_order

    s, corpus = ctx.session, ctx.corpus
    seed = ctx.seed_for("sae")
    window = ctx.spec.window
    history: list[dict] = []
    if params["sae_path"]:
        sae = load_sae(params["sae_path"], session=s, device=s.device)
        order = window_order(corpus, s, window, seed)
        n_eval = max(1, min(len(order) // 4, 2048 // window + 1))
        eval_vecs = torch.cat(list(stream_vectors(s, corpus, sae.cfg.site, sae.cfg.head,
                                                  order[:n_eval], window, 4096,
                                                  sae.cfg.skip_first_position)))
        trained = False
    else:
        from workbench.hooks import parse_site

        site = parse_site(params["site"]).check(s)
        d_in = site_d_in(s, site)
        cfg = SAEConfig(params["architecture"], d_in, d_in * params["expansion"], site=str(site),
                        k=min(params["k"], d_in * params["expansion"]))
        n_windows = len(corpus) // window
        eval_tokens = max(window, min(2048, (n_windows // 5) * window))
        tcfg = TrainConfig(total_tokens=params["train_tokens"], batch_size=512,
                           buffer_tokens=8192, warmup_steps=10, window=window,
                           tokens_per_forward=4096, eval_tokens=eval_tokens,
                           epochs=max(1, -(-params["train_tokens"] // max(1, len(corpus) - eval_tokens))),
                           aux_k=min(256, cfg.d_sae // 2), seed=seed)
        res = train_sae(s, corpus, cfg, tcfg, progress=ctx.progress)
        sae, eval_vecs, history, trained = res.sae, res.eval_vectors, res.history, True
    rec = reconstruction_metrics(sae, eval_vecs)
    batches = [wb.tokens for _, wb in zip(range(params["eval_windows"] // 4 + 1),
                                          corpus.batches(s, window=window, tokens_per_batch=4 * window,
                                                         max_tokens=params["eval_windows"] * window,
                                                         progress=False))]
    spl = splice_metrics(s, sae, batches)
    out = {"site": sae.cfg.site, "architecture": sae.cfg.architecture, "d_in": sae.cfg.d_in,
           "d_sae": sae.cfg.d_sae, "trained": trained, "reconstruction": rec.to_dict(),
           "splice": spl.to_dict(),
           "history": [{k: h[k] for k in ("step", "tokens", "loss", "fvu", "l0", "dead")} for h in history]}
    out["summary"] = {"l0": rec.l0, "fvu": rec.fvu, "dead_fraction": rec.dead / rec.d_sae,
                      "loss_recovered": spl.loss_recovered}
    out["tables"] = {"reconstruction": [rec.to_dict()], "splice": [spl.to_dict()]}
    return out
