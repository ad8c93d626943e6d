"""SAE features at residual sites with error nodes (basis c; Marks et al. 2024, "Sparse feature
circuits"): the SAEs of a graph, checked, and their rows of the frozen model.

At each SAE site resid_post:l (the residual h leaving block l) the frozen model replaces h by
the SAE's reconstruction plus an error node. The SAE's active set S_p (TopK selection, ReLU or
JumpReLU active latents, as the real forward gives them) is frozen, so on it

    a_j[p] = (h[p] - b_dec) . W_enc[:, j] + b_enc[j]          (linear in h; JumpReLU's threshold
                                                               is not re-applied: S_p is fixed)
    h[p]  <- sum_{j in S_p} a_j[p] W_dec[j] + b_dec + 1 * err[p],
    err[p] = h_real[p] - (sum_{j in S_p} a_j(h_real[p]) W_dec[j] + b_dec)

SAELens options that change the codes (apply_b_dec_to_input=false, rescale_acts_by_decoder_norm)
are folded into the weights when loading (`workbench.saes.io.load_saelens`), so every SAE here
computes (h - b_dec) W_enc + b_enc. At the prompt's own point the new residual is the real one:
the frozen forward still gives the real logits, and everything after the site flows through
its features, its error node and b_dec (a site replaces the whole residual, so no upstream node
has a direct path past it). Position 0 has no features when the SAE was trained without it
(`SAEConfig.skip_first_position`, the attention sink): its error node is the residual there
(minus b_dec). FFN layers keep their units (``other='units'``) or become one error node per
position (``'errors'``).

    g = build_graph(s, prompt, " Paris", basis="sae", saes="out/saes")   # a folder of SAEs
    g = build_graph(s, prompt, " Paris", basis="sae", saes=[sae_a, sae_b])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import WorkbenchError
from ..hooks import parse_site
from ..models import EMBEDDED
from ..saes.base import SAE
from ..saes.io import SAEFileError, load_sae
from ..session import Session
from .basis import Basis, LayerBasis, code_layer, error_layer, unit_basis
from .config import OTHER_LAYERS
from .frozen import Frozen, run

__all__ = ["SAE_SITES", "SAEs", "SAEBasisError", "sae_dirs", "read_sae_header", "load_saes", "check_graph_sae",
           "resolve_saes", "sae_basis", "same_model"]

SAE_SITES = ("resid_post",)   # site kinds the sae basis replaces
SAEs = Mapping[int, SAE] | Sequence[SAE] | str | Path

_OURS, _SAELENS = "sae.json", "cfg.json"


class SAEBasisError(WorkbenchError):
    """An SAE the sae basis cannot use: another model, an unsupported site, a wrong width, or
    two SAEs for one site."""


def same_model(a: str, b: str) -> bool:
    """Whether two model names are one model (short names and Hugging Face ids of the embedded
    models, case-insensitive)."""
    def names(x: str) -> set[str]:
        x = x.strip().lower()
        out = {x}
        for m in EMBEDDED.values():
            if x in (m.name.lower(), m.hf_name.lower()):
                out |= {m.name.lower(), m.hf_name.lower()}
        return out

    return bool(names(a) & names(b))


def _is_sae(d: Path) -> bool:
    return (d / _OURS).is_file() or (d / _SAELENS).is_file()


def sae_dirs(directory: str | Path) -> list[Path]:
    """The SAE folders under `directory`: itself if it is one (sae.json or SAELens cfg.json), its
    ``final`` (the OUT of `workbench sae train`), else its sub-folders that are SAEs or hold a
    ``final`` one, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise SAEFileError(f"SAE folder {str(d)!r} does not exist")
    if _is_sae(d):
        return [d]
    if _is_sae(d / "final"):
        return [d / "final"]
    found = []
    for c in sorted(p for p in d.iterdir() if p.is_dir()):
        if _is_sae(c):
            found.append(c)
        elif _is_sae(c / "final"):
            found.append(c / "final")
    if not found:
        if (d / "transcoder.json").is_file() or any((c / "transcoder.json").is_file() for c in d.iterdir()):
            raise SAEBasisError(f"{str(d)!r} holds transcoders, not SAEs; use basis 'transcoder' "
                                "(`workbench graph --basis transcoder --transcoders DIR`)")
        raise SAEFileError(f"{str(d)!r} holds no SAE ({_OURS} or SAELens {_SAELENS}, in it, in its "
                           "'final' folder or in a sub-folder)")
    return found


def read_sae_header(directory: str | Path) -> tuple[str, int, str]:
    """(site, d_in, model) of a saved SAE from its config alone (commands check it before the
    model loads); site is '' when the SAELens hook is not one of our sites."""
    from ..saes.io import _read_json, _site_from_hook

    d = Path(directory)
    if (d / _OURS).is_file():
        raw = _read_json(d / _OURS)
        return str(raw.get("site", "")), int(raw.get("d_in", 0)), str(raw.get("model", ""))
    raw = _read_json(d / _SAELENS)
    hook = str(raw.get("hook_name", raw.get("hook_point", "")))
    return _site_from_hook(hook), int(raw.get("d_in", 0)), str(raw.get("model_name", "") or "")


def check_graph_sae(session: Session, sae: SAE, where: str = "") -> int:
    """The block whose residual `sae` replaces; SAEBasisError unless it is an SAE of
    `session`'s model on a supported site with d_in = d_model."""
    at = f" ({where})" if where else ""
    if not isinstance(sae, SAE):
        raise SAEBasisError(f"saes hold a {type(sae).__name__}{at}; give SAE objects (workbench.saes)")
    c = sae.cfg
    if c.model and not same_model(c.model, session.name):
        raise SAEBasisError(f"SAE for site {c.site or '-'}{at} was trained on model {c.model!r}, not "
                            f"{session.name!r}")
    if not c.site:
        raise SAEBasisError(f"SAE{at} has no site (cfg.site is empty); the sae basis supports "
                            f"{_supported(session)}")
    site = parse_site(c.site)
    if site.kind not in SAE_SITES or c.head is not None:
        raise SAEBasisError(f"SAE at site {c.site}{at} is not supported by the sae basis; supported "
                            f"sites: {_supported(session)}")
    if not 0 <= site.layer < session.n_layers:
        raise SAEBasisError(f"SAE at site {c.site}{at}: layer {site.layer} is out of range; model "
                            f"{session.name!r} has {session.n_layers} layers (0..{session.n_layers - 1})")
    if c.d_in != session.d_model:
        raise SAEBasisError(f"SAE at site {c.site}{at} reads d_in={c.d_in}; the residual of model "
                            f"{session.name!r} has d_model={session.d_model}")
    return site.layer


def _supported(session: Session | None = None) -> str:
    top = f" (L in 0..{session.n_layers - 1})" if session is not None else ""
    return ", ".join(f"{k}:L" for k in SAE_SITES) + top + ", the residual leaving block L"


def load_saes(directory: str | Path, session: Session | None = None,
              device: str | torch.device = "cpu") -> dict[int, SAE]:
    """Every SAE under `directory` (see `sae_dirs`), keyed by the block whose residual it
    replaces; checked against `session` when given (`check_graph_sae`)."""
    items = []
    for d in sae_dirs(directory):
        items.append((str(d), load_sae(d, device=device)))
    return _collect(session, items)


def _collect(session: Session | None, items: list[tuple[str, SAE]]) -> dict[int, SAE]:
    out: dict[int, SAE] = {}
    where: dict[int, str] = {}
    for w, sae in items:
        if session is not None:
            layer = check_graph_sae(session, sae, w)
        else:
            layer = parse_site(sae.cfg.site).layer
        if layer in out:
            raise SAEBasisError(f"two SAEs are given for site resid_post:{layer} ({where[layer]} and {w}); "
                                "give one per site")
        out[layer], where[layer] = sae, w
    if not out:
        raise SAEBasisError("saes is empty; give at least one SAE")
    return dict(sorted(out.items()))


def resolve_saes(session: Session, saes: SAEs | None) -> dict[int, SAE]:
    """{block: SAE} from a folder (`load_saes`), a list, or a {layer: SAE} dict, each checked
    against `session` (`check_graph_sae`); a dict's key must be its SAE's layer."""
    if saes is None:
        raise SAEBasisError("basis='sae' needs SAEs: a folder of saved SAEs (`workbench sae train "
                            "--site resid_post:L`, or SAELens folders), a list or a {layer: SAE} dict")
    if isinstance(saes, (str, Path)):
        return load_saes(saes, session)
    if isinstance(saes, SAE):
        saes = [saes]
    if isinstance(saes, Mapping):
        items = []
        for key, sae in saes.items():
            w = f"key {key!r}"
            layer = check_graph_sae(session, sae, w)
            if int(key) != layer:
                raise SAEBasisError(f"saes[{key!r}] is an SAE of site {sae.cfg.site}, not of resid_post:{key}")
            items.append((w, sae))
    else:
        items = [(f"item {i}", sae) for i, sae in enumerate(saes)]
    return _collect(session, items)


@torch.no_grad()
def _site(sae: SAE, h: torch.Tensor) -> LayerBasis:
    """The row of one SAE site from the real residual h [P d_model] leaving its block."""
    dev, dt = h.device, h.dtype
    W_enc, b_enc = sae.W_enc.detach().to(dev, dt), sae.b_enc.detach().to(dev, dt)
    W_dec, b_dec = sae.W_dec.detach().to(dev, dt), sae.b_dec.detach().to(dev, dt)
    codes = sae.encode(h.to(sae.W_enc.device, sae.W_enc.dtype)).to(dev)
    active = codes != 0                                            # [P d_sae]: the frozen selection
    if sae.cfg.skip_first_position:
        active[0] = False
    return code_layer("sae", "resid_post", W_enc, b_enc, b_dec, active, W_dec, b_dec, h, h)


def sae_basis(fz: Frozen, saes: Mapping[int, SAE], other: str = "units") -> Basis:
    """The basis of an SAE graph on the frozen prompt (see the module docstring): per block its
    FFN row (units or error nodes), then its SAE site's row if it has one."""
    if other not in OTHER_LAYERS:
        raise WorkbenchError(f"other={other!r} is unknown; valid: {', '.join(map(repr, OTHER_LAYERS))}")
    bad = [layer for layer in saes if not 0 <= layer < fz.n_layers]
    if bad:
        raise SAEBasisError(f"SAE sites resid_post:{bad} are out of range (layers 0..{fz.n_layers - 1})")
    units = unit_basis(fz.weights, fz.gate)
    frun = run(fz)
    rows: list[LayerBasis] = []
    for i in range(fz.n_layers):
        rows.append(units.layers[i] if other == "units" else error_layer(frun.ffn_out[i]))
        if i in saes:
            rows.append(_site(saes[i], frun.resid_post[i]))
    return Basis("sae", tuple(rows))
