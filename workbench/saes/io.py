"""Save and load SAEs: safetensors weights + a JSON config; also the SAELens on-disk layout.

Our layout (a directory):      sae.json (SAEConfig.to_dict)   sae.safetensors (W_enc, b_enc, W_dec, b_dec[, log_threshold])
SAELens layout (a directory):  cfg.json                        sae_weights.safetensors (W_enc, b_enc, W_dec, b_dec[, threshold])
SAELens stores `threshold` (JumpReLU) and names the architecture "standard" for ReLU SAEs;
`hook_name` like ``blocks.8.hook_resid_post`` maps to our site ``resid_post:8`` when it is one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ShapeError, WorkbenchError
from ..hooks import SITE_KINDS
from .base import SAE
from .config import SAEConfig
from .models import make_sae

__all__ = ["save_sae", "load_sae", "load_saelens", "SAEFileError"]

CONFIG, WEIGHTS = "sae.json", "sae.safetensors"
SL_CONFIG, SL_WEIGHTS = "cfg.json", "sae_weights.safetensors"


class SAEFileError(WorkbenchError):
    """A missing or malformed SAE file."""


def save_sae(sae: SAE, directory: str | Path) -> Path:
    """Write sae.json and sae.safetensors into `directory` (created)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    save_file(tensors, str(d / WEIGHTS))
    (d / CONFIG).write_text(json.dumps(sae.cfg.to_dict(), indent=2), encoding="utf-8")
    return d


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise SAEFileError(f"SAE config {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAEFileError(f"SAE config {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SAEFileError(f"SAE config {str(path)!r} holds a {type(data).__name__}, not an object")
    return data


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise SAEFileError(f"SAE weights {str(path)!r} do not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SAEFileError(f"SAE weights {str(path)!r} are not a readable safetensors file: {exc}") from exc


def _fill(sae: SAE, tensors: dict[str, torch.Tensor], where: Path) -> SAE:
    want = sae.state_dict()
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise SAEFileError(f"{str(where)!r} lacks tensors {missing}; it holds {sorted(tensors)}")
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise SAEFileError(f"{str(where)!r}: tensor {k} has shape {tuple(tensors[k].shape)}, "
                               f"the config implies {tuple(v.shape)}")
    sae.load_state_dict({k: tensors[k].to(want[k].dtype) for k in want})
    return sae.eval()


def load_sae(directory: str | Path, session=None, device: str | torch.device = "cpu") -> SAE:
    """Load our layout, or the SAELens layout when cfg.json is there; check the site if `session`."""
    d = Path(directory)
    if not d.is_dir():
        raise SAEFileError(f"SAE directory {str(d)!r} does not exist")
    if not (d / CONFIG).exists() and (d / SL_CONFIG).exists():
        sae = load_saelens(d)
    else:
        raw = _read_json(d / CONFIG)
        try:
            cfg = SAEConfig.from_dict(raw)
        except (TypeError, WorkbenchError) as exc:
            raise SAEFileError(f"SAE config {str(d / CONFIG)!r} is malformed: {exc}") from exc
        sae = _fill(make_sae(cfg), _read_tensors(d / WEIGHTS), d / WEIGHTS)
    if session is not None:
        from .sites import check_sae_site

        check_sae_site(session, sae)
    return sae.to(device)


def _site_from_hook(hook: str) -> str:
    for kind, (tmpl, _) in SITE_KINDS.items():
        if kind == "head_out":
            continue
        pre, post = tmpl.split("{l}")
        if hook.startswith(pre) and hook.endswith(post):
            mid = hook[len(pre):len(hook) - len(post)]
            if mid.isdigit():
                return f"{kind}:{mid}"
    return ""


def load_saelens(directory: str | Path) -> SAE:
    """An SAE from SAELens's cfg.json + sae_weights.safetensors (standard/relu, topk, jumprelu)."""
    d = Path(directory)
    raw = _read_json(d / SL_CONFIG)
    arch = str(raw.get("architecture", "standard")).lower()
    arch = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(arch)
    if arch is None:
        raise SAEFileError(f"{str(d / SL_CONFIG)!r}: architecture={raw.get('architecture')!r} is not "
                           "supported; supported are 'standard', 'topk', 'jumprelu'")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SAEFileError(f"{str(d / SL_CONFIG)!r} lacks integer d_in and d_sae ({exc})") from exc
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k") or 32
    head = raw.get("hook_head_index")
    cfg = SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=int(k),
                    site=_site_from_hook(str(raw.get("hook_name", ""))),
                    head=int(head) if head is not None and _site_from_hook(str(raw.get("hook_name", ""))).startswith("attn_z") else None,
                    skip_first_position=False, model=str(raw.get("model_name", "")))
    tensors = _read_tensors(d / SL_WEIGHTS)
    if arch == "jumprelu":
        if "threshold" not in tensors:
            raise SAEFileError(f"{str(d / SL_WEIGHTS)!r}: a JumpReLU SAE needs a 'threshold' tensor")
        tensors["log_threshold"] = tensors.pop("threshold").float().clamp_min(1e-12).log()
    for name in ("b_enc", "b_dec"):
        if name not in tensors:
            tensors[name] = torch.zeros(d_sae if name == "b_enc" else d_in)
    if "W_enc" in tensors and tensors["W_enc"].shape[0] != d_in:
        raise ShapeError(f"{str(d / SL_WEIGHTS)!r}: W_enc is {tuple(tensors['W_enc'].shape)}, "
                         f"cfg.json says d_in={d_in}")
    return _fill(make_sae(cfg), tensors, d / SL_WEIGHTS)
