"""Contrastive graphs (Marks et al. 2024): a clean / corrupt pair and a logit difference.

The metric is  logit(target) - logit(foil)  at the last position of the clean prompt, a logit
node whose read direction is W_U[target] - W_U[foil]. Edges are attribution patching in the
frozen clean model: a source's activation a_s is replaced by its clean - corrupt difference

    A[t, s] = (a_s^clean - a_s^corrupt) d t / d a_s       (tokens: h_0^clean - h_0^corrupt)

so the metric row sums to the linear estimate of metric(clean) - metric(corrupt). Attention is
frozen in the graph, so its heads are not nodes; the summary's `heads` lists the 10 heads whose
patching (z from corrupt into clean) is estimated to move the metric most, by attribution
patching in the real model (`heads.head_effects`), the circuit's attention part. Faithfulness
patches each top unit to its corrupt value in the real clean run and compares the measured
change of the metric with the graph's path prediction and with attribution patching in the real
model, (m_corrupt - m_clean) dM/dm from one backward pass with attention, norms and gates free
(Marks et al. 2024's node score; `live.py`). The latter is the summary's
`faithfulness_spearman` by default (`GraphConfig.prediction`): on SmolLM2's IOI pairs the
mechanism runs through attention, which the frozen model holds fixed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ShapeError
from ..hooks import intervene, set_neurons
from ..session import Session
from .build import LogitNodes, attribute
from .config import GraphConfig, GraphConfigError, UnknownBasisError
from .faithfulness import (
    Faithfulness,
    live_predictions,
    predicted_effects,
    spearman,
    with_faithfulness,
)
from .frozen import freeze
from .graph import _config, assemble
from .heads import head_effects, top_heads
from .result import AttributionGraph
from .weights import model_weights

__all__ = ["contrastive_graph", "contrastive_faithfulness"]


def contrastive_graph(session: Session, clean: str, corrupt: str, target: str, foil: str,
                      config: GraphConfig | dict | None = None, *, progress: bool = True,
                      **overrides: Any) -> AttributionGraph:
    """Graph of logit(target) - logit(foil) on `clean`, edges weighted by clean - corrupt.

    Raises ShapeError when the prompts' token counts differ (positions must align), TokenError
    when target or foil is not one token.
    """
    t0 = time.perf_counter()
    cfg = _config(config, **overrides)
    if cfg.basis != "units":
        raise UnknownBasisError(f"basis={cfg.basis!r}: contrastive graphs support basis='units'")
    if cfg.faithfulness_factor != 0.0:
        raise GraphConfigError(f"faithfulness_factor={cfg.faithfulness_factor}: a contrastive graph's check "
                               "patches each unit to its corrupt value; leave the factor at 0")
    tid, fid = session.token_id(target), session.token_id(foil)
    w = model_weights(session)
    fz, fc = freeze(session, clean, w), freeze(session, corrupt, w)
    if fz.n_pos != fc.n_pos:
        raise ShapeError(f"clean prompt has {fz.n_pos} tokens and corrupt has {fc.n_pos}; "
                         "contrastive graphs need prompts of the same length")
    direction = (w.W_U[tid] - w.W_U[fid])[None]
    bias = torch.zeros(1, device=direction.device)
    if w.b_U is not None:
        bias = (w.b_U[tid] - w.b_U[fid]).reshape(1).float()
    probs = fz.logits.softmax(-1)
    diff_p = (probs[tid] - probs[fid]).reshape(1)
    logits = LogitNodes((f"{target}-{foil}",), (-1,), direction, bias, diff_p, torch.ones(1, device=diff_p.device))
    raw = attribute(fz, logits, cfg, unit_act=fz.coeffs - fc.coeffs, embed_act=fz.embed - fc.embed,
                    progress=progress)
    g = assemble(raw, fz, cfg, prompt=clean, model=session.name, target=f"{target}-{foil}", seconds0=t0)
    metric_clean = float(fz.logits[tid] - fz.logits[fid])
    metric_corrupt = float(fc.logits[tid] - fc.logits[fid])
    summary = dict(g.summary)
    summary.update(corrupt=corrupt, foil=foil, metric_clean=metric_clean, metric_corrupt=metric_corrupt,
                   metric_linear_estimate=float(raw.edge_sums[-1]))
    heads, _, _ = head_effects(session, clean, corrupt, [tid], [fid])
    summary["heads"] = [{"layer": la, "head": h, "patch_effect": float(heads[la, h])} for la, h in top_heads(heads, 10)]
    g = dataclasses.replace(g, summary=summary)
    if cfg.faithfulness_nodes:
        f = contrastive_faithfulness(session, g, fc.coeffs, tid, fid, cfg.faithfulness_nodes, progress,
                                     prediction=cfg.prediction or "live")
        g = with_faithfulness(g, f, seconds0=t0)
    return g


@torch.no_grad()
def contrastive_faithfulness(session: Session, graph: AttributionGraph, corrupt_coeffs, tid: int, fid: int,
                             n: int = 20, progress: bool = True, prediction: str = "live") -> Faithfulness:
    """Patch each top unit to its corrupt coefficient in the real clean run; compare the metric
    with the graph's prediction and with attribution patching (`prediction` picks the headline)."""
    units = [(i, nd) for i, nd in enumerate(graph.nodes) if nd.kind == "unit"][:n]
    pred_all = -predicted_effects(graph, 0)
    tokens = torch.tensor([list(graph.token_ids)], device=session.device)

    def metric():
        lg = session.model(tokens, return_type="logits")[0, -1].float()
        return float(lg[tid] - lg[fid])

    base = metric()
    measured = []
    for _, nd in tqdm(units, desc="graph: patching", disable=not progress, leave=False):
        value = float(corrupt_coeffs[nd.layer, nd.pos, nd.index])
        with intervene(session, set_neurons(nd.layer, [nd.index], value, positions=[nd.pos])):
            measured.append(metric() - base)
    pred = pred_all[[i for i, _ in units]]
    meas = torch.tensor(measured)
    nodes = [nd for _, nd in units]
    # a unit node's activation here is m_clean - m_corrupt: patching moves it by minus that
    live = live_predictions(session, graph, nodes, [-nd.activation for nd in nodes], tid, fid)
    return Faithfulness(tuple(nd.id for _, nd in units), 0.0, graph.logits[0], pred, meas, spearman(pred, meas),
                        predicted_live=live, spearman_live=spearman(live, meas), prediction=prediction)
