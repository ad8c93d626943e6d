"""What each FFN layer (and each SAE site) is made of in the frozen model: units, latents, errors.

Every layer's raw FFN output (before any post-FFN norm) is a sum of sources, each a frozen gate
times a linear read of the FFN's normalised input x = r_f h w_f, written along an output vector:

    a_c = G[p, c] (x . W_in[c] + b_in[c])                                  (source c, read)
    f   = sum_c a_c W_out[:, c] + b_out (+ x W_skip) (+ 1 * err[p])         (written)

    units        W_in = W_up, W_out = W_down, G = act(x . g_i): the FFN itself, exact
    transcoder   W_in = W_enc[:, S]^T, b_in = b_enc[S] - b_dec_in W_enc[:, S], W_out = W_dec[S]^T,
                 b_out = b_dec, G = 1 where the latent is active in the real forward (the TopK
                 selection frozen), S = latents active at some position; err[p] = f_real[p] -
                 transcoder(x_real[p]), an error node holding what the transcoder misses
    error        no latents; err[p] = f_real[p] (the whole FFN output is one error node)

The skip x W_skip is a linear path through the residual stream like attention's OV circuits:
no node, gradients pass through it. A layer's sources are the columns of a grid [L P N] (N the
widest layer): the read columns first, then its error column, then padding that holds nothing.
Built by `unit_basis` here and by `transcoders.transcoder_basis`.

SAE sites (the ``sae`` basis, `sae_sites.sae_basis`) are rows of their own, after their block's
FFN row: a residual site reads the residual h leaving block l (no norm) and replaces it wholly,

    sae          W_in = W_enc[:, S]^T, b_in = b_enc[S] - b_dec W_enc[:, S], W_out = W_dec[S]^T,
                 b_out = b_dec, G = the SAE's active set on the real forward, frozen;
                 h[p] <- sum_j a_j W_dec[j] + b_dec + 1 * err[p], err[p] = h_real[p] - sae(h_real[p])

so the grid's first axis counts rows (FFN layers, then residual sites in forward order), not
layers; `Basis.where(row)` names a row's site and block, `Basis.ffn_rows` / `site_rows` find them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import torch

from .._types import Float, Int, Tensor
from ..errors import WorkbenchError
from .weights import ModelWeights

__all__ = ["KINDS", "ROW_SITES", "LayerBasis", "Basis", "unit_basis", "code_layer", "error_layer"]

KINDS = ("units", "transcoder", "error", "sae")
ROW_SITES = ("mlp", "resid_post")  # what a row replaces: an FFN's output, the residual after a block


@dataclass(frozen=True)
class LayerBasis:
    """One row's sources: an FFN layer's, or an SAE site's (P = prompt length, n = read columns).

    Args:
        kind: ``units``, ``transcoder``, ``error`` or ``sae`` (see the module docstring).
        W_in: [n d_model] read directions on x (the FFN's normalised input; for a residual
            site the residual itself); b_in: [n] or None.
        gate: [P n] frozen gates.
        W_out: [d_model n] output vectors; b_out: [d_model] or None.
        W_skip: [d_model d_model] or None (f gets x W_skip).
        err: [P d_model] error vectors, or None (no error column).
        index: [n] what each read column is (unit index, latent id).
        site: ``mlp`` (the row writes its layer's raw FFN output) or ``resid_post`` (the row
            reads the residual leaving its block and replaces it: written = the new residual).
    """

    kind: str
    W_in: Float[Tensor, "n d_model"]
    b_in: Tensor | None
    gate: Float[Tensor, "P n"]
    W_out: Float[Tensor, "d_model n"]
    b_out: Tensor | None
    W_skip: Tensor | None
    err: Tensor | None
    index: Int[Tensor, " n"]
    site: str = "mlp"

    def __post_init__(self):
        if self.site not in ROW_SITES:
            raise WorkbenchError(f"site={self.site!r} is unknown; valid: {', '.join(map(repr, ROW_SITES))}")

    @property
    def n_read(self) -> int:
        return int(self.W_out.shape[1])

    @property
    def n_cols(self) -> int:
        return self.n_read + int(self.err is not None)

    @property
    def err_col(self) -> int:
        """The error column's index (-1 when the layer has none)."""
        return self.n_read if self.err is not None else -1

    def reads(self, x: Float[Tensor, "... P d_model"]) -> Float[Tensor, "... P n"]:
        """Source activations a_c of the read columns for FFN input x."""
        u = x @ self.W_in.T
        if self.b_in is not None:
            u = u + self.b_in
        return self.gate * u

    def write(self, src: Float[Tensor, "... P N"], x: Float[Tensor, "... P d_model"]) -> Float[Tensor, "... P d_model"]:
        """The raw FFN output from source activations `src` (grid columns; padding ignored)."""
        f = src[..., :self.n_read] @ self.W_out.T
        if self.b_out is not None:
            f = f + self.b_out
        if self.W_skip is not None:
            f = f + x @ self.W_skip
        if self.err is not None:
            f = f + src[..., self.n_read, None] * self.err
        return f

    def readout(self, g_f: Float[Tensor, "b Q d_model"], width: int) -> Float[Tensor, "b Q N"]:
        """d t / d a for every column at positions < Q, from the gradient g_f on the raw FFN
        output (padding columns zero)."""
        d = g_f @ self.W_out
        if self.err is None and self.n_read == width:
            return d
        out = g_f.new_zeros(*g_f.shape[:-1], width)
        out[..., :self.n_read] = d
        if self.err is not None:
            out[..., self.n_read] = (g_f * self.err[:g_f.shape[1]]).sum(-1)
        return out

    def readout_at(self, g_fp: Float[Tensor, "b d_model"], pos: int, cols: Int[Tensor, " c"]) -> Float[Tensor, "b c"]:
        """d t / d a for the columns `cols` at one position."""
        W = self.W_out if self.err is None else torch.cat([self.W_out, self.err[pos, :, None]], 1)
        return g_fp @ W[:, cols]

    def skip_back(self, g_f: Float[Tensor, "b Q d_model"]) -> Tensor | None:
        """The gradient on x through the skip (None without one)."""
        return None if self.W_skip is None else g_f @ self.W_skip.T


@dataclass(frozen=True)
class Basis:
    """All rows' sources; `name` is the graph's basis (``units``, ``transcoder`` or ``sae``).

    `layers` are the grid's rows in forward order: one ``mlp`` row per FFN layer (layer l is the
    l-th), each optionally followed by a ``resid_post`` row (the SAE site after that block).
    Without residual sites rows and layers coincide.
    """

    name: str
    layers: tuple[LayerBasis, ...]

    def __post_init__(self):
        if self.layers and self.layers[0].site != "mlp":
            raise WorkbenchError("a basis starts with layer 0's FFN row")
        for a, b in zip(self.layers, self.layers[1:]):
            if a.site == "resid_post" and b.site == "resid_post":
                raise WorkbenchError("two residual-site rows follow one block")

    @property
    def n_rows(self) -> int:
        return len(self.layers)

    @cached_property
    def row_layer(self) -> tuple[int, ...]:
        """The block of each row (an FFN row's layer; a residual site's block)."""
        out, layer = [], -1
        for lb in self.layers:
            layer += lb.site == "mlp"
            out.append(layer)
        return tuple(out)

    @cached_property
    def ffn_rows(self) -> tuple[int, ...]:
        """Row of each FFN layer, by layer."""
        return tuple(r for r, lb in enumerate(self.layers) if lb.site == "mlp")

    @cached_property
    def site_rows(self) -> dict[int, int]:
        """{block: row} of the residual sites."""
        return {self.row_layer[r]: r for r, lb in enumerate(self.layers) if lb.site == "resid_post"}

    def where(self, row: int) -> tuple[str, int]:
        """(site, block) of a row: (``mlp``, layer) or (``resid_post``, block)."""
        return self.layers[row].site, self.row_layer[row]

    @property
    def width(self) -> int:
        return max((lb.n_cols for lb in self.layers), default=0)

    def targets(self) -> Tensor:
        """[R N] bool: columns that are read (can be graph targets): not errors, not padding."""
        out = torch.zeros(len(self.layers), self.width, dtype=torch.bool)
        for i, lb in enumerate(self.layers):
            out[i, :lb.n_read] = True
        return out

    def error_cols(self) -> list[tuple[int, int]]:
        """(row, error column) of every row that has error nodes."""
        return [(i, lb.err_col) for i, lb in enumerate(self.layers) if lb.err is not None]

    def node(self, layer: int, col: int) -> tuple[str, int]:
        """(kind, index) of a grid column of row `layer`: (``unit``, unit i), (``feature``,
        latent id), (``error``, -1)."""
        lb = self.layers[layer]
        if col == lb.err_col:
            return "error", -1
        return ("unit" if lb.kind == "units" else "feature"), int(lb.index[col])


def unit_basis(w: ModelWeights, gate: Float[Tensor, "L P d_mlp"]) -> Basis:
    """Every layer as its FFN units (views of the weights; `gate` the frozen act(x . g_i))."""
    layers = []
    for i, lw in enumerate(w.layers):
        idx = torch.arange(lw.W_down.shape[1], device=lw.W_down.device)
        layers.append(LayerBasis("units", lw.W_up, lw.b_up, gate[i], lw.W_down, lw.b_down, None, None, idx))
    return Basis("units", tuple(layers))


def code_layer(kind: str, site: str, W_enc: Float[Tensor, "d_model n"], b_enc: Float[Tensor, " n"],
               center: Float[Tensor, " d_model"], active: Tensor, W_dec: Float[Tensor, "n d_model"],
               b_dec: Float[Tensor, " d_model"], x: Float[Tensor, "P d_model"], target: Float[Tensor, "P d_model"],
               W_skip: Tensor | None = None) -> LayerBasis:
    """A dictionary (transcoder or SAE) as a row, its selection `active` [P n] (bool) frozen: the
    latents active at some position read a_j = (x - center) . W_enc[:, j] + b_enc[j] and write
    a_j W_dec[j] + b_dec (+ x W_skip); the error column holds `target` minus that write at the
    prompt's own x, so the row reproduces `target` exactly."""
    latents = active.any(0).nonzero().flatten()
    lb = LayerBasis(kind, W_enc[:, latents].T.contiguous(), b_enc[latents] - center @ W_enc[:, latents],
                    active[:, latents].to(x.dtype), W_dec[latents].T.contiguous(), b_dec, W_skip, None, latents, site)
    return dataclasses.replace(lb, err=target - lb.write(lb.reads(x), x))


def error_layer(f: Float[Tensor, "P d_model"]) -> LayerBasis:
    """An FFN layer as one error node per position holding its whole raw output `f`."""
    d = f.shape[-1]
    return LayerBasis("error", f.new_zeros(0, d), None, f.new_zeros(f.shape[0], 0), f.new_zeros(d, 0), None, None,
                      f.clone(), torch.zeros(0, dtype=torch.long, device=f.device))
