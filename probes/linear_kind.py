"""The ``linear`` probe kind: a scikit-learn probe per layer on corpus or POS labels.

Corpus labels (see `probes.labels.CORPUS_LABELS`) use the battery's corpus activations, shared
with every other probe on the same site; ``label = "pos"`` uses the hand-labelled POS set.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.hooks import SITE_KINDS

from .context import ProbeContext, parse_layers
from .labels import CORPUS_LABELS, corpus_labels, pos_examples, token_table
from .linear import ProbeConfig, balance_indices, probe_layers
from .registry import Param, SpecError, register_kind

__all__ = ["run_linear", "LABEL_CHOICES"]

LABEL_CHOICES = (*CORPUS_LABELS, "pos")
SITE_CHOICES = tuple(k for k in SITE_KINDS if k != "attn_pattern")


def _check(params: dict, where: str) -> None:
    layers = params["layers"]
    if isinstance(layers, str) and layers != "all":
        raise SpecError(f"{where} layers={layers!r} must be 'all' or a list of layer indices")
    if isinstance(layers, list) and (not layers or not all(isinstance(v, int) for v in layers)):
        raise SpecError(f"{where} layers={layers!r} must be a non-empty list of integers")
    ProbeConfig(model=params["model"], C=params["C"], test_fraction=params["test_fraction"])
    if params["max_examples"] < 8:
        raise SpecError(f"{where} max_examples={params['max_examples']} must be >= 8")


@register_kind(
    "linear",
    params={
        "label": Param(str, choices=LABEL_CHOICES, doc="what to decode"),
        "site": Param(str, "resid_post", SITE_CHOICES, "hook site kind probed at each layer"),
        "layers": Param((str, list), "all", doc="'all' or a list of layer indices"),
        "model": Param(str, "logistic", ("logistic", "ridge"), "probe model"),
        "C": Param(float, 1.0, doc="inverse regularisation strength"),
        "test_fraction": Param(float, 0.25, doc="held-out share"),
        "max_tokens": Param(int, 0, doc="corpus tokens (0: the battery's max_tokens)"),
        "max_examples": Param(int, 8000, doc="examples kept (random subsample) per probe"),
        "balance": Param(bool, False, doc="subsample every class to the rarest class's size"),
    },
    doc="Linear probe per layer with held-out accuracy, a Hewitt & Liang control task (random "
        "labels by token type) and the selectivity gap (accuracy - control accuracy).",
    check=_check,
)
def run_linear(ctx: ProbeContext, params: dict) -> dict:
    s = ctx.session
    layers = parse_layers(params["layers"], s.n_layers, s.check_layer)
    seed = ctx.seed_for(f"linear:{params['label']}:{params['site']}")
    if params["label"] == "pos":
        acts, labels, types, classes = _pos_data(ctx, params["site"], layers)
    else:
        ca = ctx.corpus_acts(params["site"], layers, params["max_tokens"] or None)
        table = token_table(s.tokenizer, s.d_vocab)
        labels = corpus_labels(params["label"], ca.ext, ca.width, table).reshape(-1)
        acts, types, classes = ca.acts, ca.types, ("no", "yes")
    keep = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    if params["balance"]:
        keep = keep[balance_indices(labels[keep], seed)]
    if len(keep) > params["max_examples"]:
        keep = np.sort(rng.choice(keep, size=params["max_examples"], replace=False))
    n_pos = int((labels[keep] > 0).sum())
    if len(np.unique(labels[keep])) < 2:
        raise SpecError(f"label={params['label']!r} has a single class on this data "
                        f"({len(keep)} examples); use more tokens or another label")
    cfg = ProbeConfig(model=params["model"], C=params["C"], test_fraction=params["test_fraction"],
                      seed=seed)
    res = probe_layers(acts[keep], labels[keep], types[keep], label=params["label"],
                       site=params["site"], classes=classes, layers=layers, cfg=cfg,
                       progress=ctx.progress)
    out = res.to_dict()
    out["n_examples"] = int(len(keep))
    out["n_positive"] = n_pos
    best = res.best()
    out["summary"] = {"best_layer": best.layer, "best_accuracy": best.accuracy,
                      "best_selectivity": best.selectivity, "chance": best.chance,
                      "max_accuracy": max(r.accuracy for r in res.layers)}
    return out


@torch.no_grad()
def _pos_data(ctx: ProbeContext, kind: str, layers: list[int]):
    from workbench.capture import capture_tokens

    s = ctx.session
    ex = pos_examples(s.tokenizer, s.prepend_bos)
    batch = s.batch_from_ids(ex.rows)
    sites = [f"{kind}:{layer}" for layer in layers]
    cap = capture_tokens(s, batch, sites)
    r, p = torch.as_tensor(ex.positions[:, 0]), torch.as_tensor(ex.positions[:, 1])
    acts = torch.stack([cap[x].to("cpu")[r, p].flatten(1) for x in sites], 1).float().numpy()
    return acts, ex.labels, ex.types, ex.classes
