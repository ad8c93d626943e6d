"""Hook sites that read the same for every architecture, scoped hooks, and interventions.

Site kinds (shapes as captured; `layer` is the block index):

    resid_pre    [batch pos d_model]      residual stream entering the block
    resid_mid    [batch pos d_model]      residual after attention, before the FFN
    resid_post   [batch pos d_model]      residual leaving the block
    attn_pattern [batch head qpos kpos]   attention probabilities (post-softmax)
    attn_z       [batch pos head d_head]  per-head attention-weighted values, before W_O
    head_out     [batch pos head d_model] per-head outputs z_h @ W_O[h] (derived from attn_z)
    attn_out     [batch pos d_model]      raw attention output (sum of head_out, + bias)
    attn_resid   [batch pos d_model]      what attention adds to the residual (post-norm on Gemma)
    mlp_in       [batch pos d_model]      normalised FFN input (what the keys read)
    mlp_pre      [batch pos d_mlp]        gate (or sole) pre-activation
    mlp_post     [batch pos d_mlp]        FFN key coefficients m_i (act(gate) * up when gated)
    mlp_out      [batch pos d_model]      raw FFN output sum_i m_i v_i (+ bias)
    mlp_resid    [batch pos d_model]      what the FFN adds to the residual (post-norm on Gemma)

On Llama-style models attn_resid == attn_out and mlp_resid == mlp_out; on Gemma the residual
gets the post-sublayer RMSNorm of them.
"""

from __future__ import annotations

import contextlib
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ._types import Tensor
from .errors import (
    HeadOutOfRange,
    LayerOutOfRange,
    NeuronOutOfRange,
    NonFiniteError,
    PositionOutOfRange,
    ShapeError,
    UnknownSiteError,
    as_int,
    check_index,
    check_units,
    choices,
)
from .session import Session

__all__ = [
    "SITE_KINDS",
    "Site",
    "site",
    "sites",
    "parse_site",
    "Intervention",
    "zero_neurons",
    "scale_neurons",
    "set_neurons",
    "ablate_heads",
    "scale_heads",
    "patch",
    "add_vector",
    "intervene",
]

# kind -> (hook name template, dims of the captured tensor)
SITE_KINDS: dict[str, tuple[str, str]] = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", "batch pos d_model"),
    "resid_mid": ("blocks.{l}.hook_resid_mid", "batch pos d_model"),
    "resid_post": ("blocks.{l}.hook_resid_post", "batch pos d_model"),
    "attn_pattern": ("blocks.{l}.attn.hook_pattern", "batch head qpos kpos"),
    "attn_z": ("blocks.{l}.attn.hook_z", "batch pos head d_head"),
    "head_out": ("blocks.{l}.attn.hook_z", "batch pos head d_model"),
    "attn_out": ("blocks.{l}.attn.hook_out", "batch pos d_model"),
    "attn_resid": ("blocks.{l}.hook_attn_out", "batch pos d_model"),
    "mlp_in": ("blocks.{l}.mlp.hook_in", "batch pos d_model"),
    "mlp_pre": ("blocks.{l}.mlp.hook_pre", "batch pos d_mlp"),
    "mlp_post": ("blocks.{l}.mlp.hook_post", "batch pos d_mlp"),
    "mlp_out": ("blocks.{l}.mlp.hook_out", "batch pos d_model"),
    "mlp_resid": ("blocks.{l}.hook_mlp_out", "batch pos d_model"),
}
DERIVED = {"head_out"}


@dataclass(frozen=True, order=True)
class Site:
    """One hook site: a kind from `SITE_KINDS` at a layer."""

    kind: str
    layer: int

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in SITE_KINDS:
            raise UnknownSiteError(
                f"site kind={self.kind!r} is unknown; valid kinds are {choices(SITE_KINDS, 20)}"
            )
        layer = as_int(self.layer)
        if layer is None:
            raise LayerOutOfRange(f"layer={self.layer!r} of site {self.kind!r} must be an int "
                                  "(a block index)")
        if type(self.layer) is not int:  # a NumPy or tensor integer: keep a plain int
            object.__setattr__(self, "layer", layer)

    @property
    def hook_name(self) -> str:
        return SITE_KINDS[self.kind][0].format(l=self.layer)

    @property
    def dims(self) -> str:
        return SITE_KINDS[self.kind][1]

    @property
    def derived(self) -> bool:
        return self.kind in DERIVED

    def check(self, session: Session) -> Site:
        """Raise LayerOutOfRange when the layer does not exist in `session`'s model."""
        session.check_layer(self.layer)
        return self

    def width(self, session: Session) -> int:
        """Size of the last dimension for `session` (d_model, d_mlp, d_head or key positions)."""
        last = self.dims.split()[-1]
        return {"d_model": session.d_model, "d_mlp": session.d_mlp, "d_head": session.d_head}.get(last, -1)

    def __str__(self) -> str:
        return f"{self.kind}:{self.layer}"


def site(kind: str, layer: int) -> Site:
    return Site(kind, int(layer))


def sites(kind: str, layers: Iterable[int] | None = None, session: Session | None = None) -> list[Site]:
    """Sites of one kind at `layers` (default: every layer of `session`)."""
    if layers is None:
        if session is None:
            raise ValueError("sites(kind) needs layers= or session=")
        layers = range(session.n_layers)
    return [Site(kind, int(layer)) for layer in layers]


_SITE_RE = re.compile(r"^(?:blocks\.)?(\d+)[.:]([a-z_]+)$|^([a-z_]+)[:@.](\d+)$")


def parse_site(text: str | Site | tuple[str, int]) -> Site:
    """Parse ``"mlp_post:5"``, ``"5.mlp_post"``, ``("mlp_post", 5)`` or a Site."""
    if isinstance(text, Site):
        return text
    if isinstance(text, tuple):
        if len(text) != 2:
            raise UnknownSiteError(f"site={text!r} must be a (kind, layer) pair such as "
                                   f"('mlp_post', 5); kinds are {choices(SITE_KINDS, 20)}")
        return Site(text[0], text[1])
    m = _SITE_RE.match(str(text).strip())
    if not m:
        raise UnknownSiteError(
            f"site={text!r} is not of the form 'kind:layer' (e.g. 'mlp_post:5'); "
            f"kinds are {choices(SITE_KINDS, 20)}"
        )
    if m.group(1) is not None:
        return Site(m.group(2), int(m.group(1)))
    return Site(m.group(3), int(m.group(4)))


def head_outputs(session: Session, layer: int, z: Tensor) -> Tensor:
    """Per-head outputs [batch pos head d_model] = z[..., h, :] @ W_O[h]."""
    W_O = session.model.blocks[layer].attn.W_O  # [head d_head d_model]
    return torch.einsum("bphd,hdm->bphm", z, W_O.to(z.dtype))


# ---------------------------------------------------------------- interventions
Positions = int | Sequence[int] | None


@dataclass(frozen=True)
class Intervention:
    """A change applied to one site's activation while the model runs.

    Args:
        site: where (not a derived site).
        edit: fn(act) -> new act, same shape; act is [batch pos ...] or a pattern.
        description: for logs and reports.
        unit_dim: "neuron" or "head" when `units` index d_mlp or heads, else None.
        units: the indices the edit touches (validated against the model).
        vector: a tensor that must match the site's width (validated), if any.
    """

    site: Site
    edit: Callable[[Tensor], Tensor]
    description: str
    unit_dim: str | None = None
    units: tuple[int, ...] = ()
    vector: Tensor | None = None

    def validate(self, session: Session) -> None:
        self.site.check(session)
        if self.site.derived:
            raise UnknownSiteError(
                f"site {self.site} is derived and cannot be intervened on; use attn_z "
                "(ablate_heads / scale_heads) for per-head changes"
            )
        if self.unit_dim == "neuron":
            for u in self.units:
                check_index(u, session.d_mlp, f"neuron (layer {self.site.layer})", NeuronOutOfRange)
        elif self.unit_dim == "head":
            for u in self.units:
                check_index(u, session.n_heads, f"head (layer {self.site.layer})", HeadOutOfRange)
        if self.vector is not None:
            width = self.site.width(session)
            if self.vector.shape[-1] != width:
                raise ShapeError(
                    f"vector for {self.site} has last dim {self.vector.shape[-1]}; "
                    f"the site is {self.site.dims} with width {width}"
                )
            if not torch.isfinite(self.vector).all():
                raise NonFiniteError(f"vector for {self.site} holds NaN or infinite values")

    def hook(self) -> tuple[str, Callable]:
        edit = self.edit

        def fn(act, hook=None):
            return edit(act)

        return (self.site.hook_name, fn)


def _positions_index(positions: Positions, n_pos: int) -> Tensor | slice:
    if positions is None:
        return slice(None)
    pos = [positions] if isinstance(positions, int) else list(positions)
    out = []
    for p in pos:
        q = p + n_pos if p < 0 else p
        if not 0 <= q < n_pos:
            raise PositionOutOfRange(
                f"position={p} is out of range for a prompt of {n_pos} tokens (valid: {-n_pos}..{n_pos - 1})"
            )
        out.append(q)
    return torch.tensor(out, dtype=torch.long)


def _unit_mask(act: Tensor, positions: Positions, units: Sequence[int], unit_axis: int) -> Tensor:
    """Bool mask broadcastable to act [batch pos ...] selecting positions x units."""
    shape = [1] * act.dim()
    shape[1] = act.shape[1]
    shape[unit_axis] = act.shape[unit_axis]
    mask = torch.zeros(shape[1], shape[unit_axis], dtype=torch.bool, device=act.device)
    pidx = _positions_index(positions, act.shape[1])
    uidx = torch.as_tensor(list(units), dtype=torch.long, device=act.device)
    if isinstance(pidx, slice):
        mask[:, uidx] = True
    else:
        mask[pidx.to(act.device)[:, None], uidx[None, :]] = True
    return mask.view(shape)


def _positions(positions: Positions) -> tuple[int, ...] | None:
    """None (every position), or the positions as a tuple of ints (ranges are checked per prompt)."""
    return None if positions is None else check_units(positions, "positions", PositionOutOfRange)


def _factor(value: float, what: str) -> float:
    """A real number (or a one-element tensor) to scale by, else ShapeError naming it."""
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value
    raise ShapeError(f"{what}={value!r} must be a real number")


def scale_neurons(layer: int, neurons: int | Sequence[int], factor: float,
                  positions: Positions = None) -> Intervention:
    """Multiply FFN coefficients m_i of `neurons` by `factor` (at `positions`, default all)."""
    units = check_units(neurons, "neurons", NeuronOutOfRange)
    factor = _factor(factor, "factor")
    positions = _positions(positions)

    def edit(act):
        mask = _unit_mask(act, positions, units, act.dim() - 1)
        return torch.where(mask, act * factor, act)

    return Intervention(Site("mlp_post", layer), edit,
                        f"scale L{layer} neurons {list(units)} x{factor}", "neuron", units)


def zero_neurons(layer: int, neurons: int | Sequence[int], positions: Positions = None) -> Intervention:
    """Set FFN coefficients m_i of `neurons` to zero (knocks out their values' sub-updates)."""
    iv = scale_neurons(layer, neurons, 0.0, positions)
    return Intervention(iv.site, iv.edit, f"zero L{layer} neurons {list(iv.units)}", "neuron", iv.units)


def set_neurons(layer: int, neurons: int | Sequence[int], value: float | Sequence[float],
                positions: Positions = None) -> Intervention:
    """Set FFN coefficients of `neurons` to `value` (one value, or one per neuron)."""
    units = check_units(neurons, "neurons", NeuronOutOfRange)
    positions = _positions(positions)
    try:
        vals = torch.as_tensor(value, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ShapeError(f"value={value!r} must be a number or a list of numbers (one per neuron)") from None
    if vals.numel() not in (1, len(units)):
        raise ShapeError(f"value has {vals.numel()} entries; give 1 or one per neuron ({len(units)})")
    if not torch.isfinite(vals).all():
        raise NonFiniteError(f"value={value!r} holds NaN or infinite values")

    def edit(act):
        mask = _unit_mask(act, positions, units, act.dim() - 1)
        full = torch.zeros(act.shape[-1], dtype=act.dtype, device=act.device)
        full[list(units)] = vals.to(act.device, act.dtype).expand(len(units))
        return torch.where(mask, full, act)

    return Intervention(Site("mlp_post", layer), edit,
                        f"set L{layer} neurons {list(units)} = {vals.tolist()}", "neuron", units)


def scale_heads(layer: int, heads: int | Sequence[int], factor: float,
                positions: Positions = None) -> Intervention:
    """Scale the attention heads' z (and so their outputs) by `factor`."""
    units = check_units(heads, "heads", HeadOutOfRange)
    factor = _factor(factor, "factor")
    positions = _positions(positions)

    def edit(act):  # [batch pos head d_head]
        mask = _unit_mask(act, positions, units, 2)
        return torch.where(mask, act * factor, act)

    return Intervention(Site("attn_z", layer), edit,
                        f"scale L{layer} heads {list(units)} x{factor}", "head", units)


def ablate_heads(layer: int, heads: int | Sequence[int], positions: Positions = None) -> Intervention:
    """Zero-ablate attention heads: their outputs z_h @ W_O[h] become zero."""
    iv = scale_heads(layer, heads, 0.0, positions)
    return Intervention(iv.site, iv.edit, f"ablate L{layer} heads {list(iv.units)}", "head", iv.units)


def patch(site_: Site | str, source: Tensor, positions: Positions = None) -> Intervention:
    """Replace the site's activation by `source` (from another run) at `positions`.

    `source` has the captured shape of the site ([batch or 1, pos, ...]); positions beyond
    the source's length are an error.
    """
    s = parse_site(site_)
    where = positions if positions is not None else "all"
    positions = _positions(positions)
    if not isinstance(source, torch.Tensor):
        raise ShapeError(f"patch source for {s} must be a tensor of the site's shape ({s.dims}), "
                         f"got {type(source).__name__}")
    src = source.detach()
    if not torch.isfinite(src).all():
        raise NonFiniteError(f"patch source for {s} holds NaN or infinite values")

    def edit(act):
        if src.shape[2:] != act.shape[2:] or src.shape[0] not in (1, act.shape[0]):
            raise ShapeError(f"patch source for {s} has shape {tuple(src.shape)}; "
                             f"the activation is {tuple(act.shape)} ({s.dims})")
        n = min(src.shape[1], act.shape[1])
        pidx = _positions_index(positions, n)
        out = act.clone()
        s_ = src.to(act.device, act.dtype)
        if s_.shape[0] == 1:
            s_ = s_.expand(act.shape[0], *s_.shape[1:])
        if isinstance(pidx, slice):
            out[:, :n] = s_[:, :n]
        else:
            out[:, pidx] = s_[:, pidx]
        return out

    return Intervention(s, edit, f"patch {s} at {where}")


def add_vector(site_: Site | str, vector: Tensor, scale: float = 1.0,
               positions: Positions = None) -> Intervention:
    """Add `scale * vector` to the site's activation (steering) at `positions`."""
    s = parse_site(site_)
    scale = _factor(scale, "scale")
    positions = _positions(positions)
    if not isinstance(vector, torch.Tensor):
        raise ShapeError(f"vector for {s} must be a tensor [{s.dims.split()[-1]}], "
                         f"got {type(vector).__name__}")
    vec = vector.detach().flatten()

    def edit(act):
        pidx = _positions_index(positions, act.shape[1])
        out = act.clone()
        out[:, pidx] += scale * vec.to(act.device, act.dtype)
        return out

    return Intervention(s, edit, f"add vector x{scale} at {s}", vector=vec)


@contextlib.contextmanager
def intervene(session: Session, *interventions: Intervention) -> Iterator[None]:
    """Apply interventions for the body only; all are validated before any is registered.

    Example:
        >>> with intervene(s, zero_neurons(5, [10, 11])):
        ...     logits = s.logits("The capital of France is")
    """
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"expected an Intervention, got {type(iv).__name__}")
        iv.validate(session)
    with session.hooks([iv.hook() for iv in interventions]):
        yield
