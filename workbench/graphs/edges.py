"""Edges by batched vector-Jacobian products through the frozen model (one backward per block).

A target t reads the residual linearly: a unit (l, p, i) reads h_l'[p] (after attention, before
the FFN) along e_t = G_l[p, i] r_f[l, p] (w_f * u_i); a logit node reads h_L[last] along
e_t = r_F[last] (w_F * W_U[t]). Its cotangent e_t is injected at that point and carried down
the frozen model's transpose, which holds every unit as a node (a stop-gradient: paths go only
through the residual stream and the frozen attention OV circuits, never through another unit):

    FFN of layer l     g_f = post_f^T g;  d t / d m_{l, p, i} = g_f[p] . v_i   (source read-out)
    attention layer l  g <- g + r_a w_a * W_v^T sum_q P_l[., q, k] (W_o^T post_a^T g)[q]
    tokens             d t / d h_0[p] = g[p]

The direct edge s -> t is then a_s * (d t / d a_s) with a_s the source's activation (m_s, or 1
for a token node with the embedding as output vector). An SAE site after block l (``sae`` basis)
reads the residual there along e_t = G_j W_enc[:, j] and replaces it: its features and error
node are read out from the residual's gradient (d t / d a_j = g[p] . W_dec[j]), and then the
gradient of the targets above the site stops (nothing below reaches them but through it).

A block of B targets shares one pass: g is [B P d_model]; targets only see positions <= their
own, so the pass is cut to the block's largest position and starts at its highest layer.
Biases (none on Llama / Gemma) are carried as one constant per target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._types import Float, Int, Tensor
from ..errors import WorkbenchError
from .basis import Basis
from .frozen import Frozen

__all__ = ["Seeds", "unit_seeds", "source_seeds", "logit_seeds", "backward", "total_derivatives",
           "total_ffn_gradients", "total_resid_gradients"]


@dataclass(frozen=True)
class Seeds:
    """A block of B targets as cotangents on the residual.

    Args:
        slot: [B] the basis row whose input the target reads: an FFN layer's normalised input
            (units: the layer), or a residual site's residual; the row count (n_layers for
            units): the final residual.
        pos: [B] the position it reads.
        vec: [B d_model] the read direction e_t on the residual.
        bias: [B] the constant part of the target's value (up-projection / unembedding bias).
    """

    slot: Int[Tensor, " B"]
    pos: Int[Tensor, " B"]
    vec: Float[Tensor, "B d_model"]
    bias: Float[Tensor, " B"]

    def __len__(self) -> int:
        return int(self.slot.shape[0])


def unit_seeds(fz: Frozen, layer: Tensor, pos: Tensor, index: Tensor) -> Seeds:
    """Seeds of unit targets (layer, pos, index) [B]: e_t = G r_f (w_f * u_i), bias G b_up_i."""
    return source_seeds(fz, None, layer, pos, index)


def source_seeds(fz: Frozen, basis: Basis | None, layer: Tensor, pos: Tensor, col: Tensor) -> Seeds:
    """Seeds of source targets (row, pos, column) [B] of `basis` (None: units, rows = layers):
    an FFN source reads x = r_f h w_f along W_in[c] through its frozen gate, so
    e_t = G r_f (w_f * W_in[c]); a residual-site source reads h itself, e_t = G W_in[c]. The
    constant is G b_in[c]."""
    w = fz.weights
    B, d = len(layer), w.W_E.shape[1]
    vec = torch.empty(B, d, device=fz.embed.device, dtype=fz.embed.dtype)
    bias = torch.zeros(B, device=fz.embed.device)
    for row in layer.unique().tolist():  # one gather per row
        m = layer == row
        if basis is None:
            lw = w.layers[row]
            W_in, b_in, g = lw.W_up, lw.b_up, fz.gate[row, pos[m], col[m]]
        else:
            lb = basis.layers[row]
            W_in, b_in, g = lb.W_in, lb.b_in, lb.gate[pos[m], col[m]]
        if basis is not None and lb.site == "resid_post":
            vec[m] = g[:, None] * W_in[col[m]]
        else:
            lay = row if basis is None else basis.row_layer[row]
            vec[m] = (g * fz.r_ffn[lay, pos[m]])[:, None] * w.layers[lay].ln_ffn.w * W_in[col[m]]
        if b_in is not None:
            bias[m] = (g * b_in[col[m]]).float()
    return Seeds(layer.clone(), pos.clone(), vec, bias)


def logit_seeds(fz: Frozen, directions: Float[Tensor, "B d_model"], bias: Tensor | None = None,
                basis: Basis | None = None) -> Seeds:
    """Seeds of logit-like targets at the last position: e_t = r_F (w_F * direction) (slot: the
    row count of `basis`, n_layers for units)."""
    w = fz.weights
    B, last = directions.shape[0], fz.n_pos - 1
    vec = directions * (fz.r_final[last] * w.ln_final.w)
    b = bias if bias is not None else torch.zeros(B, device=vec.device)
    top = w.n_layers if basis is None else basis.n_rows
    return Seeds(torch.full((B,), top, dtype=torch.long, device=vec.device),
                 torch.full((B,), last, dtype=torch.long, device=vec.device), vec, b.float())


FFNReadout = Callable[[int, Float[Tensor, "b Q d_model"], "Tensor | None"], None]
ResidReadout = Callable[[int, Float[Tensor, "B Q d_model"]], None]


def backward(fz: Frozen, seeds: Seeds, on_ffn: FFNReadout, through_units: bool = False,
             basis: Basis | None = None, on_resid: ResidReadout | None = None,
             ) -> tuple[Float[Tensor, "B Q d_model"], Float[Tensor, " B"]]:
    """Carry a block of target cotangents down the frozen model's transpose.

    `on_ffn(row, g_f, rows)` is called for each basis row below the block's highest slot with
    g_f [b Q d_model] the gradient on what the row writes (an FFN layer's raw output; a residual
    site's new residual) for the block rows `rows` (None: all B rows) that read above it
    (Q = block's largest position + 1); `g_f @ W_down` gives d t / d m for every unit of a
    layer. Without a basis rows are layers. Returns the gradient on the token embeddings
    [B Q d_model] and each target's constant term [B].

    `through_units=True` removes the stop-gradient at the units: the cotangent also flows back
    through every unit's read m = G (x . u) (gates still frozen), so d t / d m becomes the total
    derivative of the frozen model (all paths), used to check graph predictions.

    `basis` (transcoder layers): the cotangent also flows through each layer's skip x W_skip
    and its constant b_out is carried as bias (ignored with `through_units`, which follows the
    real FFN). Residual sites (``sae`` basis) read out their features and error node, carry
    b_dec as bias, and stop the gradient of the targets above them.

    `on_resid(layer, g)`, if given, sees the gradient g [B Q d_model] on the residual leaving
    block `layer` (all rows, before that block's site, if any, is passed).
    """
    w = fz.weights
    if through_units and basis is not None and basis.site_rows:
        raise WorkbenchError("through_units follows the real FFNs; it takes no SAE sites")
    B = len(seeds)
    Q = int(seeds.pos.max()) + 1
    top = int(seeds.slot.max())
    n_rows = w.n_layers if basis is None else basis.n_rows
    ffn_rows = range(w.n_layers) if basis is None else basis.ffn_rows
    site_rows = {} if basis is None else basis.site_rows
    top_layer = w.n_layers - 1 if top >= n_rows else (top if basis is None else basis.row_layer[top])
    rep = w.n_heads // w.n_kv_heads
    dev, dt = seeds.vec.device, seeds.vec.dtype
    g = torch.zeros(B, Q, w.W_E.shape[1], device=dev, dtype=dt)
    rows = torch.arange(B, device=dev)
    bias = seeds.bias.clone().float()
    at_top = seeds.slot == n_rows
    if at_top.any():
        g[rows[at_top], seeds.pos[at_top]] += seeds.vec[at_top]

    def inject(row: int) -> None:
        here = seeds.slot == row
        if here.any():
            g[rows[here], seeds.pos[here]] += seeds.vec[here]

    for layer in range(top_layer, -1, -1):
        lw = w.layers[layer]
        if on_resid is not None:
            on_resid(layer, g)
        sr = site_rows.get(layer)
        if sr is not None and basis is not None:
            live = seeds.slot > sr
            if live.any():  # the site's features and error node are sources for targets above it
                r = None if bool(live.all()) else live.nonzero().flatten()
                gl = g if r is None else g[r]
                b_dec = basis.layers[sr].b_out
                if b_dec is not None:
                    bias.index_add_(0, rows if r is None else r, (gl.sum(1) @ b_dec).float())
                on_ffn(sr, gl, r)
                if r is None:  # the site replaces the residual: nothing below reaches these targets
                    g = torch.zeros_like(g)
                else:
                    g[r] = 0.0
            inject(sr)
        fr = ffn_rows[layer]
        # rows injected below this layer carry no gradient here yet: skip them
        live = seeds.slot > fr
        if live.any():  # units of this layer are sources for targets above it
            r = None if bool(live.all()) else live.nonzero().flatten()
            gl = g if r is None else g[r]
            g_f = gl * (fz.post_factors("ffn")[layer, :Q, None] * lw.post_ffn.w) if lw.post_ffn is not None else gl
            b_out = lw.b_down if basis is None or through_units else basis.layers[fr].b_out
            if b_out is not None:
                bias.index_add_(0, rows if r is None else r, (g_f.sum(1) @ b_out).float())
            on_ffn(fr, g_f, r)
            g_skip = None if basis is None or through_units else basis.layers[fr].skip_back(g_f)
            if g_skip is not None:
                upd = g_skip * (fz.r_ffn[layer, :Q, None] * lw.ln_ffn.w)
                if r is None:
                    g = g + upd
                else:
                    g[r] += upd
            if through_units:
                dm = (g_f @ lw.W_down) * fz.gate[layer, :Q]
                upd = (dm @ lw.W_up) * (fz.r_ffn[layer, :Q, None] * lw.ln_ffn.w)
                if r is None:
                    g = g + upd
                else:
                    g[r] += upd
        inject(fr)
        live = seeds.slot >= fr
        r = None if bool(live.all()) else live.nonzero().flatten()
        gl = g if r is None else g[r]
        nb = gl.shape[0]
        g_o = gl * (fz.post_factors("attn")[layer, :Q, None] * lw.post_attn.w) if lw.post_attn is not None else gl
        if lw.b_o is not None:
            bias.index_add_(0, rows if r is None else r, (g_o.sum(1) @ lw.b_o).float())
        g_z = (g_o @ lw.W_o).unflatten(-1, (w.n_heads, w.d_head))                  # [b Q H dh]
        # g_v[b, k, j] = sum_{h in group j} sum_q P[h, q, k] g_z[b, q, h]: one bmm per KV group,
        # the group's heads and query positions contracted together
        kv = w.n_kv_heads
        pt = fz.pattern[layer, :, :Q, :Q].view(kv, rep, Q, Q).permute(0, 3, 1, 2).reshape(kv, Q, rep * Q)
        gz = g_z.permute(2, 1, 0, 3).reshape(kv, rep * Q, nb * w.d_head)          # [kv rep*q b*dh]
        g_v = (pt @ gz).view(kv, Q, nb, w.d_head).permute(2, 1, 0, 3).reshape(nb, Q, kv * w.d_head)
        if lw.b_v is not None:
            bias.index_add_(0, rows if r is None else r, (g_v.sum(1) @ lw.b_v).float())
        upd = (g_v @ lw.W_v) * (fz.r_attn[layer, :Q, None] * lw.ln_attn.w)
        if r is None:
            g = g + upd
        else:
            g[r] += upd
    return g, bias


def total_ffn_gradients(fz: Frozen, direction: Float[Tensor, " d_model"]) -> Float[Tensor, "L P d_model"]:
    """d (direction . final normed residual at the last position) / d f for every layer's raw FFN
    output f, along all paths of the frozen model (gates, norms and attention fixed; units not
    cut). A vector added to f at (l, p) changes the read by its dot product with [l, p]."""
    w = fz.weights
    out = torch.zeros(fz.n_layers, fz.n_pos, w.W_E.shape[1], device=fz.embed.device, dtype=fz.embed.dtype)

    def on_ffn(layer, g_f, rows):
        out[layer] = g_f[0]

    backward(fz, logit_seeds(fz, direction[None]), on_ffn, through_units=True)
    return out


def total_resid_gradients(fz: Frozen, direction: Float[Tensor, " d_model"]) -> Float[Tensor, "L P d_model"]:
    """d (direction . final normed residual at the last position) / d h_l for the residual h_l
    leaving every block, along all paths of the frozen model (units not cut): a vector added to
    the residual after block l at position p changes the read by its dot product with [l, p]."""
    w = fz.weights
    out = torch.zeros(fz.n_layers, fz.n_pos, w.W_E.shape[1], device=fz.embed.device, dtype=fz.embed.dtype)

    def on_resid(layer, g):
        out[layer] = g[0]

    backward(fz, logit_seeds(fz, direction[None]), lambda *a: None, through_units=True, on_resid=on_resid)
    return out


def total_derivatives(fz: Frozen, direction: Float[Tensor, " d_model"]) -> Float[Tensor, "L P d_mlp"]:
    """d (direction . final normed residual at the last position) / d m for every unit, along
    all paths of the frozen model (gates, norms and attention fixed; units not cut)."""
    g = total_ffn_gradients(fz, direction)
    return torch.stack([g[i] @ lw.W_down for i, lw in enumerate(fz.weights.layers)])
