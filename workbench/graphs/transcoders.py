"""Transcoder layers of a graph: latents with their TopK selection frozen, plus error nodes.

On the prompt's frozen forward each transcoder reads its layer's FFN input x (the same in the
frozen model as in the real one) and its active latents S_p = {j : f_j(x_p) > 0} are frozen:
a latent's activation is then linear in x, a_j = (x - b_dec_in) . W_enc[:, j] + b_enc[j] on
S_p (0 elsewhere), its output a_j W_dec[j]. The error node of (layer, p) is

    err[p] = f[p] - (sum_{j in S_p} a_j W_dec[j] + b_dec + x_p W_skip)

with f the layer's real raw FFN output, so the frozen forward, and every graph row, stays exact.
Position 0 has no latents when the transcoder was trained without it (`skip_first_position`:
the attention sink): its error node is the whole FFN output there. Layers without a transcoder
keep their FFN units (``other='units'``) or become one error node per position (``'errors'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import WorkbenchError
from ..saes.transcoder import Transcoder, check_transcoder, load_transcoders
from ..session import Session
from .basis import Basis, LayerBasis, code_layer, error_layer, unit_basis
from .config import OTHER_LAYERS
from .frozen import Frozen, run

__all__ = ["Transcoders", "transcoder_basis", "resolve_transcoders"]

Transcoders = Mapping[int, Transcoder] | Sequence[Transcoder] | str | Path


def resolve_transcoders(session: Session, transcoders: Transcoders | None) -> dict[int, Transcoder]:
    """{layer: transcoder} from a mapping, a list or a folder (`saes.load_transcoders`), each
    checked against `session` (`TranscoderMismatch` names both models or layers)."""
    if transcoders is None:
        raise WorkbenchError("basis='transcoder' needs transcoders: a folder of saved transcoders "
                             "(`workbench sae train --transcoder`), a list or a {layer: transcoder} dict")
    if isinstance(transcoders, (str, Path)):
        return load_transcoders(transcoders, session)
    items = list(transcoders.items()) if isinstance(transcoders, Mapping) else [(t.cfg.layer, t) for t in transcoders]
    out: dict[int, Transcoder] = {}
    for layer, tc in items:
        if not isinstance(tc, Transcoder):
            raise WorkbenchError(f"transcoders hold a {type(tc).__name__} for layer {layer}; give Transcoder objects")
        check_transcoder(session, tc, int(layer))
        if int(layer) in out:
            raise WorkbenchError(f"two transcoders are given for layer {layer}")
        out[int(layer)] = tc
    if not out:
        raise WorkbenchError("transcoders is empty; give at least one")
    return dict(sorted(out.items()))


@torch.no_grad()
def _layer(tc: Transcoder, x: torch.Tensor, f: torch.Tensor) -> LayerBasis:
    dev, dt = x.device, x.dtype
    W_enc, b_enc = tc.W_enc.detach().to(dev, dt), tc.b_enc.detach().to(dev, dt)
    b_dec_in, W_dec, b_dec = tc.b_dec_in.detach().to(dev, dt), tc.W_dec.detach().to(dev, dt), tc.b_dec.detach().to(dev, dt)
    W_skip = tc.W_skip.detach().to(dev, dt) if tc.W_skip is not None else None
    active = tc.encode(x.to(tc.W_enc.dtype).to(tc.W_enc.device)).to(dev) > 0        # [P d_tc]
    if tc.cfg.skip_first_position:
        active[0] = False
    return code_layer("transcoder", "mlp", W_enc, b_enc, b_dec_in, active, W_dec, b_dec, x, f, W_skip)


def transcoder_basis(fz: Frozen, transcoders: Mapping[int, Transcoder], other: str = "units") -> Basis:
    """The basis of a transcoder graph on the frozen prompt (see the module docstring)."""
    if other not in OTHER_LAYERS:
        raise WorkbenchError(f"other={other!r} is unknown; valid: {', '.join(map(repr, OTHER_LAYERS))}")
    bad = [layer for layer in transcoders if not 0 <= layer < fz.n_layers]
    if bad:
        raise WorkbenchError(f"transcoder layers {bad} are out of range (0..{fz.n_layers - 1})")
    units = unit_basis(fz.weights, fz.gate)
    frun = run(fz)
    layers = []
    for i in range(fz.n_layers):
        x, f = frun.ffn_in[i], frun.ffn_out[i]
        if i in transcoders:
            layers.append(_layer(transcoders[i], x, f))
        elif other == "units":
            layers.append(units.layers[i])
        else:
            layers.append(error_layer(f))
    return Basis("transcoder", tuple(layers))
