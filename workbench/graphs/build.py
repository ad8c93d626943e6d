"""Attribution over FFN sources: pick candidate nodes by influence, then all edges among them.

Sources are the rows' columns of a `basis.Basis` (FFN units by default; transcoder latents, SAE
features at residual sites and error nodes otherwise; a row is an FFN layer or an SAE site, so
a source's first coordinate is its row, not always its layer). Two passes through the frozen model's transpose (`edges.backward`):

1. Selection. Rows of the logit nodes first, over every source (all units or active latents at
   all positions, the error nodes and the tokens). A running influence estimate I over all sources starts at
   I = sum_t w_t |A_t,.| / sum_s |A_t,s| (w = the chosen logits' weights); then, block by block,
   the unvisited units of largest I get their rows computed and pass their own I on the same
   way (circuit-tracer's greedy order; error nodes are never targets). Each row's absolute total over ALL sources is kept (the
   normaliser of the pruning step, so that mass from sources left out of the graph counts as
   missing) and its exactness is checked: value_t = sum_s A_t,s + bias_t in the frozen model.
2. Adjacency. The rows of the selected units and the logits again, read out only at the
   selected units, every error node and the tokens: the dense matrix A [n n] (rows targets,
   columns sources; order: units (or latents), error nodes, tokens, logits).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._types import Float, Int, Tensor
from .basis import Basis, unit_basis
from .config import GraphConfig
from .edges import Seeds, backward, logit_seeds, source_seeds
from .frozen import Frozen, run

log = logging.getLogger(__name__)

__all__ = ["LogitNodes", "RawGraph", "attribute"]


@dataclass(frozen=True)
class LogitNodes:
    """The output nodes: a read direction on the final normed residual each (a W_U row, or a
    difference of rows for a logit-difference metric), with the influence weights pruning uses."""

    labels: tuple[str, ...]
    ids: tuple[int, ...]
    directions: Float[Tensor, "K d_model"]
    bias: Float[Tensor, " K"]
    probs: Float[Tensor, " K"]
    weights: Float[Tensor, " K"]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class RawGraph:
    """The unpruned graph over the selected sources, the error nodes, the tokens and the logits.

    Args:
        units: [M 3] (row, pos, column) of the selected sources (units, or latents by their
            basis column: `basis.node` names them), in selection order.
        unit_act: [M] their activations as used on edges.
        adjacency: [n n] A[t, s] = direct edge s -> t, n = M + E + P + K.
        total_abs: [n] sum of |A[t, s]| over ALL sources of row t (0 for token rows).
        values: [n] the frozen model's value of each target row (NaN for tokens).
        exact_err: [n] |value - sum_s A[t, s] - bias| / |value| per target row (NaN for tokens).
        bias: [n] the constant term of each row.
        edge_sums: [n] sum_s A[t, s] over ALL sources of row t, with the edge activations (equal
            to value - bias for plain graphs; the attribution-patching estimate in contrastive ones).
        errors: [E 3] (row, pos, column) of the error nodes (sources only, like tokens).
        basis: the sources' basis (None: FFN units).
    """

    units: Int[Tensor, "M 3"]
    unit_act: Float[Tensor, " M"]
    adjacency: Float[Tensor, "n n"]
    total_abs: Float[Tensor, " n"]
    values: Float[Tensor, " n"]
    exact_err: Float[Tensor, " n"]
    bias: Float[Tensor, " n"]
    edge_sums: Float[Tensor, " n"]
    n_tokens: int
    logits: LogitNodes
    errors: Tensor | None = None
    basis: Basis | None = None

    @property
    def n_units(self) -> int:
        return int(self.units.shape[0])

    @property
    def n_errors(self) -> int:
        return 0 if self.errors is None else int(self.errors.shape[0])


def _block_size(cfg: GraphConfig, fz: Frozen, width: int, n_rows: int) -> int:
    """Targets per backward pass: `cfg.batch`, cut so one block's full edge rows fit in
    `cfg.memory_mb` and in half of what the device has free (`memplan.free_bytes`)."""
    from ..memplan import free_bytes

    per_row = n_rows * fz.n_pos * width * 4
    budget = min(cfg.memory_mb << 20, free_bytes(fz.embed.device) // 2)
    return max(1, min(cfg.batch, budget // per_row))


def _full_rows(fz: Frozen, basis: Basis, seeds: Seeds, act: Tensor, embed_act: Tensor, real_act: Tensor):
    """Rows over every source: |source edges| [B R Q N], token edges [B Q], bias [B], and each
    row's sum with the real activations in float64 (the exactness check)."""
    Q = int(seeds.pos.max()) + 1
    N = basis.width
    absE = torch.zeros(len(seeds), basis.n_rows, Q, N, device=seeds.vec.device, dtype=seeds.vec.dtype)
    real = torch.zeros(len(seeds), dtype=torch.float64, device=seeds.vec.device)
    est = torch.zeros(len(seeds), dtype=torch.float64, device=seeds.vec.device)
    same = act is real_act

    def on_ffn(layer, g_f, rows):
        d = basis.layers[layer].readout(g_f, N)
        e = d * act[layer, :Q]
        r = slice(None) if rows is None else rows
        real_part = (d * real_act[layer, :Q]).sum((1, 2)) if not same else e.sum((1, 2))
        real[r] += real_part.double()
        est[r] += e.sum((1, 2)).double()
        if rows is None:
            torch.abs(e, out=absE[:, layer])
        else:
            absE[rows, layer] = e.abs()

    g0, bias = backward(fz, seeds, on_ffn, basis=basis)
    tok = (g0 * embed_act[:Q]).sum(-1)
    real.add_((tok if same else (g0 * fz.embed[:Q]).sum(-1)).double().sum(1))
    est.add_(tok.double().sum(1))
    return absE, tok, bias, real + bias.double(), est


def _rel(err: Tensor, value: Tensor) -> Tensor:
    return err.abs() / value.abs().clamp_min(1e-30)


def attribute(fz: Frozen, logits: LogitNodes, cfg: GraphConfig, unit_act: Tensor | None = None,
              embed_act: Tensor | None = None, progress: bool = True, basis: Basis | None = None) -> RawGraph:
    """Select up to cfg.max_nodes sources by influence and build the adjacency among them.

    Args:
        unit_act: [R P N] source activations on edges (default: the frozen model's own reads,
            the real ones up to rounding; contrastive graphs pass clean - corrupt).
        embed_act: [P d_model] token-node outputs on edges (default: the embeddings).
        basis: the sources (default: FFN units); error nodes all enter the graph as sources.
    """
    w = fz.weights
    b = basis if basis is not None else unit_basis(w, fz.gate)
    L, P, D = b.n_rows, fz.n_pos, b.width
    frun = run(fz, basis=basis)
    # the frozen model's own coefficients (the real ones up to rounding; float32 for bf16 models)
    act = frun.reads if unit_act is None else unit_act
    e_act = fz.embed if embed_act is None else embed_act
    dev = fz.embed.device
    frozen_logits = logits.directions @ (frun.resid[-1] * fz.r_final[-1] * w.ln_final.w) + logits.bias
    inf = torch.zeros(L, P, D, device=dev)
    # only read columns are targets: error and padding columns start as visited
    visited = (~b.targets().to(dev))[:, None, :].expand(L, P, D).clone()
    if cfg.skip_first_position:
        visited[:, 0] = True          # the attention sink's units are never candidates (GraphConfig)
    order: list[Tensor] = []
    row_tot: list[Tensor] = []
    row_err: list[Tensor] = []
    row_val: list[Tensor] = []
    row_bias: list[Tensor] = []
    row_est: list[Tensor] = []

    def spread(seeds: Seeds, weights: Tensor, values: Tensor):
        absE, tok, bias, real, est = _full_rows(fz, b, seeds, act, e_act, frun.reads)
        Q = absE.shape[2]
        tot = absE.sum((1, 2, 3)) + tok.abs().sum(1)
        coef = weights / tot.clamp_min(1e-30)
        inf[:, :Q] += (coef @ absE.view(len(coef), -1)).view(L, Q, D)
        row_tot.append(tot)
        row_err.append(_rel(real - values.double(), values.double()).float())
        row_val.append(values.float())
        row_bias.append(bias)
        row_est.append(est.float())

    B = _block_size(cfg, fz, D, L)
    lg_seeds = logit_seeds(fz, logits.directions, logits.bias, b)
    for i in range(0, len(logits), B):
        sl = slice(i, i + B)
        spread(Seeds(lg_seeds.slot[sl], lg_seeds.pos[sl], lg_seeds.vec[sl], lg_seeds.bias[sl]),
               logits.weights[sl].to(dev), frozen_logits[sl])
    logit_stats = (torch.cat(row_tot), torch.cat(row_err), torch.cat(row_val), torch.cat(row_bias),
                   torch.cat(row_est))
    for lst in (row_tot, row_err, row_val, row_bias, row_est):
        lst.clear()

    flat_inf, flat_vis = inf.view(-1), visited.view(-1)
    n_sel = 0
    bar = tqdm(total=cfg.max_nodes, desc="graph: select", unit="node", disable=not progress, leave=False)
    while n_sel < cfg.max_nodes:
        score = flat_inf.masked_fill(flat_vis, -1.0)
        k = min(B, cfg.max_nodes - n_sel)
        top = score.topk(k)
        pick = top.indices[top.values > 0]
        if len(pick) == 0:
            break
        flat_vis[pick] = True
        weights = flat_inf[pick].clone()
        layer, rest = pick // (P * D), pick % (P * D)
        pos, idx = rest // D, rest % D
        order.append(torch.stack([layer, pos, idx], 1))
        spread(source_seeds(fz, b, layer, pos, idx), weights, frun.reads[layer, pos, idx])
        n_sel += len(pick)
        bar.update(len(pick))
    bar.close()
    units = torch.cat(order) if order else torch.zeros(0, 3, dtype=torch.long, device=dev)
    errors = torch.tensor([(lay, p, col) for lay, col in b.error_cols() for p in range(P)],
                          dtype=torch.long, device=dev).reshape(-1, 3)
    M, E, K = len(units), len(errors), len(logits)
    n = M + E + P + K

    def cat(xs, dt):
        return torch.cat(xs) if xs else torch.zeros(0, device=dev, dtype=dt)

    zeros, nan = torch.zeros(E + P, device=dev), torch.full((E + P,), float("nan"), device=dev)
    total_abs = torch.cat([cat(row_tot, torch.float32), zeros, logit_stats[0]])
    exact = torch.cat([cat(row_err, torch.float32), nan, logit_stats[1]])
    values = torch.cat([cat(row_val, torch.float32), nan, logit_stats[2]])
    biases = torch.cat([cat(row_bias, torch.float32), zeros, logit_stats[3]])
    sums = torch.cat([cat(row_est, torch.float32), zeros, logit_stats[4]])
    adjacency = _adjacency(fz, b, units, errors, logits, act, e_act, B, n, progress)
    u_act = act[units[:, 0], units[:, 1], units[:, 2]] if M else torch.zeros(0, device=dev)
    return RawGraph(units, u_act, adjacency, total_abs, values, exact, biases, sums, P, logits, errors,
                    basis)


def _adjacency(fz: Frozen, basis: Basis, units: Tensor, errors: Tensor, logits: LogitNodes, act: Tensor,
               e_act: Tensor, B: int, n: int, progress: bool) -> Tensor:
    """Rows of the selected sources and the logits, read out at the selected sources, the error
    nodes and the tokens."""
    M, E, P = len(units), len(errors), fz.n_pos
    dev = fz.embed.device
    A = torch.zeros(n, n, device=dev)
    sources = torch.cat([units, errors])
    groups: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
    for (lay, pos), cols in _group(sources).items():
        idx = sources[cols, 2]
        groups[(lay, pos)] = (cols, idx)
    by_layer: dict[int, list[tuple[int, Tensor, Tensor]]] = {}
    for (lay, pos), (cols, idx) in groups.items():
        by_layer.setdefault(lay, []).append((pos, cols, idx))
    # target rows sorted by (slot, pos) so blocks share a short pass
    l_seeds = logit_seeds(fz, logits.directions, logits.bias, basis)
    rows = torch.cat([torch.arange(M, device=dev), M + E + P + torch.arange(len(logits), device=dev)])
    slot, at, vec, bias = l_seeds.slot, l_seeds.pos, l_seeds.vec, l_seeds.bias
    if M:
        u_seeds = source_seeds(fz, basis, units[:, 0], units[:, 1], units[:, 2])
        slot, at = torch.cat([units[:, 0], slot]), torch.cat([units[:, 1], at])
        vec, bias = torch.cat([u_seeds.vec, vec]), torch.cat([u_seeds.bias, bias])
    order = torch.argsort(slot * (P + 1) + at)
    bar = tqdm(total=len(order), desc="graph: edges", unit="row", disable=not progress, leave=False)
    for i in range(0, len(order), B):
        o = order[i:i + B]
        seeds = Seeds(slot[o], at[o], vec[o], bias[o])
        Q = int(seeds.pos.max()) + 1
        block = torch.zeros(len(o), n, device=dev)

        on_ffn = _sel_readout(basis, by_layer, act, block, Q)
        g0, _ = backward(fz, seeds, on_ffn, basis=basis)
        block[:, M + E:M + E + Q] = (g0 * e_act[:Q]).sum(-1)
        A[rows[o]] = block
        bar.update(len(o))
    bar.close()
    return A


def _sel_readout(basis: Basis, by_layer, act, block, Q):
    """Read d t / d a only at the selected sources of each layer, grouped by position."""

    def on_ffn(layer, g_f, r):
        lb = basis.layers[layer]
        for p, cols, idx in by_layer.get(layer, ()):
            if p < Q:
                vals = lb.readout_at(g_f[:, p], p, idx) * act[layer, p, idx]
                if r is None:
                    block[:, cols] = vals
                else:
                    block[r[:, None], cols[None, :]] = vals

    return on_ffn


def _group(units: Tensor) -> dict[tuple[int, int], Tensor]:
    out: dict[tuple[int, int], list[int]] = {}
    for j, (lay, pos) in enumerate(units[:, :2].tolist()):
        out.setdefault((lay, pos), []).append(j)
    return {k: torch.tensor(v, device=units.device) for k, v in out.items()}
