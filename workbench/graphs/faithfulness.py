"""Faithfulness: does the graph predict what ablating its top nodes does in the real model?

For each of the top-n kept units or transcoder latents s (by influence), the graph predicts the
change of the target logit when s is scaled by `factor` (0 = ablation) from its own paths:

    pred_s = (factor - 1) a_s R[t, s],   R = D + D^2 + ...,   D[t', s'] = A[t', s'] / a_s'

(A the kept nodes' direct edges, so R sums every path inside the graph). The real model then
runs with that unit scaled at its position only (`workbench.scale_neurons`; attention, norms and
gates free) and the measured change of the target logit is compared with the prediction by
Spearman rank correlation. A latent j of layer l is scaled by adding (factor - 1) a_j W_dec[j]
to that layer's raw FFN output at its position (`workbench.add_vector` on mlp_out; the real
FFN stays, so this is the latent's own contribution taken out of the real model). An SAE
feature j at resid_post:l (``sae`` basis) is scaled by adding (factor - 1) a_j W_dec[j] to the
residual leaving block l at its position (the SAE is not spliced into the real model: this takes
the feature's own contribution out of the real residual).

Nodes at position 0 are tested apart (`sink_*`): position 0 is the attention sink of both
embedded models, so ablating a unit there moves every attention pattern, which the frozen model
holds fixed by construction; on SmolLM2 such ablations moved the target logit by up to 5 where
the frozen model predicted a fraction of that, and they are most of the top nodes of fact
graphs. `spearman` is over the top-n nodes at positions >= 1; `sink_spearman` over the top-n
at position 0, so neither hides the other.

Next to the graph's path sums, every check also scores the same nodes by attribution patching
in the real model (`live`: one backward pass with attention, norms and gates free; `live.py`),
`spearman_live`. `prediction` names the one the summary's `faithfulness_spearman` reports
(``graph``, the default of target-logit graphs, or ``live``, the default of contrastive graphs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..errors import WorkbenchError
from ..hooks import Site, add_vector, intervene, scale_neurons
from ..saes.base import SAE
from ..saes.transcoder import Transcoder
from ..session import Session
from .config import PREDICTIONS
from .edges import total_ffn_gradients, total_resid_gradients
from .frozen import freeze
from .live import live_gradients, node_site
from .result import AttributionGraph
from .weights import ModelWeights

__all__ = ["PREDICTIONS", "Faithfulness", "predicted_effects", "faithfulness", "spearman", "with_faithfulness",
           "live_predictions"]


def spearman(x: Float[Tensor, " n"], y: Float[Tensor, " n"]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 points or a
    constant input."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if len(x) < 3:
        return math.nan

    def ranks(v):
        order = v.argsort()
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=v.dtype)
        for val in v.unique():  # average ranks of ties
            m = v == val
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = (rx.norm() * ry.norm())
    return float((rx @ ry) / den) if den > 0 else math.nan


def predicted_effects(graph: AttributionGraph, logit: int | None = None) -> Float[Tensor, " k"]:
    """Total effect a_s R[t, s] of every kept node s on logit node `logit` (index among the
    graph's logit nodes; default the one with the largest pruning weight), inside the graph."""
    nodes = graph.nodes
    li = [i for i, n in enumerate(nodes) if n.kind == "logit"]
    k = logit if logit is not None else max(range(len(li)), key=lambda j: graph.logit_weights[j])
    t = li[k]
    act = torch.tensor([n.activation if n.kind in ("unit", "feature", "error") else 1.0 for n in nodes],
                       dtype=torch.float64)
    act = torch.where(act == 0, torch.ones_like(act), act)
    A = graph.adjacency.double()
    D = A / act[None, :]
    D[:, [i for i, n in enumerate(nodes) if n.kind == "logit"]] = 0.0
    r = D[t].clone()
    acc = r.clone()
    for _ in range(len(nodes)):
        r = r @ D
        if not bool((r != 0).any()):
            break
        acc += r
    return (acc * torch.tensor([n.activation if n.kind != "token" else 1.0 for n in nodes], dtype=torch.float64)).float()


@dataclass(frozen=True)
class Faithfulness:
    """Predicted vs measured change of the target logit for the top-n units / latents.

    Args:
        node_ids: the nodes tested. factor: the scale applied (0 = ablation).
        logit: the logit label followed. predicted, measured: [n] changes of that logit.
        spearman: rank correlation of predicted and measured.
        predicted_frozen: [n] the frozen model's own prediction (all paths through every FFN
            unit, not only the graph's; gates fixed) and spearman_frozen its rank correlation with
            measured: the gap to `spearman` is what pruning loses, the rest is nonlinearity.
        sink_node_ids, sink_predicted, sink_measured, sink_spearman: the same for the top-n
            nodes at position 0 (the attention sink; module docstring).
        predicted_live, spearman_live, sink_predicted_live, sink_spearman_live: attribution
            patching in the real model for the same nodes (`live.py`).
        prediction: which one `headline` reports (``graph`` or ``live``).
    """

    node_ids: tuple[str, ...]
    factor: float
    logit: str
    predicted: Float[Tensor, " n"]
    measured: Float[Tensor, " n"]
    spearman: float
    predicted_frozen: Float[Tensor, " n"] | None = None
    spearman_frozen: float = math.nan
    sink_node_ids: tuple[str, ...] = ()
    sink_predicted: Float[Tensor, " m"] | None = None
    sink_measured: Float[Tensor, " m"] | None = None
    sink_spearman: float = math.nan
    predicted_live: Float[Tensor, " n"] | None = None
    spearman_live: float = math.nan
    sink_predicted_live: Float[Tensor, " m"] | None = None
    sink_spearman_live: float = math.nan
    prediction: str = "graph"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise WorkbenchError(f"prediction={self.prediction!r} is unknown; valid: {', '.join(PREDICTIONS)}")

    @property
    def headline(self) -> float:
        """The rank correlation of the chosen prediction (positions >= 1)."""
        return self.spearman_live if self.prediction == "live" else self.spearman


def live_predictions(session: Session, graph: AttributionGraph, nodes, changes: list[float], target: int,
                     foil: int | None = None, transcoders: dict[int, Transcoder] | None = None,
                     saes: dict[int, SAE] | None = None) -> Float[Tensor, " n"]:
    """Attribution patching: for each node (a GraphNode of kind unit / feature) and the change of
    its activation (a' - a), (a' - a) (w . dM/dx) from one real backward pass (`live.py`)."""
    if not nodes:
        return torch.zeros(0)
    basis = graph.config.basis
    where = [Site(node_site(nd.kind, basis), nd.layer) for nd in nodes]
    grads = live_gradients(session, list(graph.token_ids), target, foil, where)
    out = []
    for nd, st, dv in zip(nodes, where, changes):
        g = grads[st][nd.pos]
        if nd.kind == "unit":
            out.append(dv * float(g[nd.index]))
        else:
            out.append(dv * float(g @ _decoder_row(nd, basis, transcoders, saes).to(g.device, g.dtype)))
    return torch.tensor(out)


def _decoder_row(nd, basis: str, transcoders: dict[int, Transcoder] | None,
                 saes: dict[int, SAE] | None) -> Float[Tensor, " d_model"]:
    """What one unit of a feature node writes at its site (`live.node_site`): its dictionary's
    decoder row."""
    table = transcoders if basis == "transcoder" else saes
    if table is None or nd.layer not in table:
        what = "transcoder" if basis == "transcoder" else "SAE"
        raise WorkbenchError(f"node {nd.id} is a feature of layer {nd.layer}; give that layer's {what}")
    return table[nd.layer].W_dec[nd.index].detach()


@torch.no_grad()
def faithfulness(session: Session, graph: AttributionGraph, n: int = 20, factor: float = 0.0,
                 progress: bool = True, transcoders: dict[int, Transcoder] | None = None,
                 saes: dict[int, SAE] | None = None, prediction: str = "graph",
                 weights: ModelWeights | None = None) -> Faithfulness:
    """Scale each of the top-n kept units (and latents: give the graph's `transcoders`, or its
    `saes` {layer: SAE at resid_post:layer} for an ``sae`` graph) by `factor` in the real model
    and compare with the graph's prediction and with attribution patching (`prediction` picks
    the headline). `weights`: the frozen model's weights if already read (`build_graph` passes
    its own: a second float32 copy was 27 GiB at the Llama-3.1-8B shape)."""
    if prediction not in PREDICTIONS:
        raise WorkbenchError(f"prediction={prediction!r} is unknown; valid: {', '.join(PREDICTIONS)}")
    if transcoders and saes:
        raise WorkbenchError("give a graph's transcoders or its SAEs, not both")
    kinds = ("unit", "feature") if transcoders or saes else ("unit",)
    cand = [(i, nd) for i, nd in enumerate(graph.nodes) if nd.kind in kinds]
    units = [(i, nd) for i, nd in cand if nd.pos > 0][:n]
    sinks = [(i, nd) for i, nd in cand if nd.pos == 0][:n]
    li = [i for i, nd in enumerate(graph.nodes) if nd.kind == "logit"]
    k = max(range(len(li)), key=lambda j: graph.logit_weights[j])
    logit_node = graph.nodes[li[k]]
    pred_all = predicted_effects(graph, k) * (factor - 1.0)
    tokens = torch.tensor([list(graph.token_ids)], device=session.device)
    tid = logit_node.index
    base = session.model(tokens, return_type="logits")[0, -1, tid].float()
    fz = freeze(session, list(graph.token_ids), weights)   # weights: the graph's (no second float32 copy)
    basis = graph.config.basis
    # the frozen model's all-path gradient at each site a tested node writes to
    g_site = {"mlp_out": total_ffn_gradients(fz, fz.weights.W_U[tid])}
    if basis == "sae":
        g_site["resid_post"] = total_resid_gradients(fz, fz.weights.W_U[tid])
    measured, frozen = [], []
    for _, nd in tqdm(units + sinks, desc="graph: faithfulness", disable=not progress, leave=False):
        if nd.kind == "unit":
            change = scale_neurons(nd.layer, [nd.index], factor, positions=[nd.pos])
            out_vec, g = fz.weights.layers[nd.layer].W_down[:, nd.index], g_site["mlp_out"]
        else:  # take (1 - factor) of the feature's own write out of its site (mlp_out or resid_post)
            site = node_site(nd.kind, basis)
            g = g_site[site]
            out_vec = _decoder_row(nd, basis, transcoders, saes).to(g.device, g.dtype)
            change = add_vector(Site(site, nd.layer), out_vec.to(session.device, session.dtype),
                                (factor - 1.0) * nd.activation, positions=[nd.pos])
        with intervene(session, change):
            out = session.model(tokens, return_type="logits")[0, -1, tid].float()
        measured.append(float(out - base))
        frozen.append((factor - 1.0) * nd.activation * float(g[nd.layer, nd.pos] @ out_vec))
    m = len(units)
    pred = pred_all[[i for i, _ in units]]
    meas = torch.tensor(measured[:m])
    frozen_pred = torch.tensor(frozen[:m])
    s_pred, s_meas = pred_all[[i for i, _ in sinks]], torch.tensor(measured[m:])
    tested = [nd for _, nd in units + sinks]
    live = live_predictions(session, graph, tested, [(factor - 1.0) * nd.activation for nd in tested], tid,
                            None, transcoders, saes)
    return Faithfulness(tuple(nd.id for _, nd in units), factor, logit_node.label, pred, meas, spearman(pred, meas),
                        frozen_pred, spearman(frozen_pred, meas), tuple(nd.id for _, nd in sinks),
                        s_pred, s_meas, spearman(s_pred, s_meas), live[:m], spearman(live[:m], meas),
                        live[m:], spearman(live[m:], s_meas), prediction)


def with_faithfulness(graph: AttributionGraph, f: Faithfulness, seconds0: float | None = None) -> AttributionGraph:
    """A copy of `graph` whose summary holds the faithfulness result (and updated seconds)."""
    summary = dict(graph.summary)
    summary["faithfulness_spearman"] = f.headline
    summary["faithfulness_prediction"] = f.prediction
    summary["faithfulness_spearman_graph"] = f.spearman
    summary["faithfulness_spearman_live"] = f.spearman_live
    summary["faithfulness_spearman_sink_live"] = f.sink_spearman_live
    summary["faithfulness_nodes"] = len(f.node_ids)
    summary["faithfulness_spearman_frozen"] = f.spearman_frozen
    summary["faithfulness_spearman_sink"] = f.sink_spearman
    summary["faithfulness_sink_nodes"] = len(f.sink_node_ids)
    if seconds0 is not None:
        summary["seconds"] = time.perf_counter() - seconds0
    return dataclasses.replace(graph, summary=summary)
