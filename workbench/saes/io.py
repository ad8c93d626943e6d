"""Save and load SAEs: safetensors weights + a JSON config; also the SAELens on-disk layout.

Our layout (a directory):      sae.json (SAEConfig.to_dict)   sae.safetensors (W_enc, b_enc, W_dec, b_dec[, log_threshold])
SAELens layout (a directory):  cfg.json                        sae_weights.safetensors (W_enc, b_enc, W_dec, b_dec[, threshold])
SAELens stores `threshold` (JumpReLU) and names the architecture "standard" for ReLU SAEs;
`hook_name` like ``blocks.8.hook_resid_post`` maps to our site ``resid_post:8`` when it is one.
SAELens options that change the codes are honoured exactly or refused by name (`load_saelens`);
no cfg.json key is accepted and ignored unless it is informational (`SL_INFORMATIONAL`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ShapeError, WorkbenchError
from ..hooks import SITE_KINDS
from ..session import Session
from .base import SAE
from .config import SAEConfig
from .models import make_sae

__all__ = ["save_sae", "load_sae", "load_saelens", "SAEFileError", "SL_INFORMATIONAL"]

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


def load_sae(directory: str | Path, session: Session | None = None, device: str | torch.device = "cpu") -> SAE:
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


# SAELens cfg.json keys (v3-v6, inference and training configs) that do not change what the
# SAE computes: provenance, run-time placement, training hyperparameters. Accepted and ignored.
SL_INFORMATIONAL = frozenset({
    "dtype", "device", "model_name", "model_class_name", "hook_layer", "hook_point_layer",
    "model_from_pretrained_kwargs", "prepend_bos", "exclude_special_tokens", "neuronpedia_id",
    "context_size", "seqpos_slice", "dataset_path", "dataset_trust_remote_code", "sae_lens_version",
    "sae_lens_training_version", "metadata", "hook_name_out", "hook_head_index_out",
    "l1_coefficient", "lp_norm", "l1_warm_up_steps", "l0_coefficient", "l0_warm_up_steps",
    "use_ghost_grads", "normalize_sae_decoder", "noise_scale", "decoder_orthogonal_init",
    "mse_loss_normalization", "jumprelu_init_threshold", "jumprelu_bandwidth",
    "jumprelu_sparsity_loss_mode", "jumprelu_tanh_scale", "pre_act_loss_coefficient",
    "decoder_heuristic_init", "decoder_heuristic_init_norm", "init_encoder_as_decoder_transpose",
    "scale_sparsity_penalty_by_decoder_norm", "b_dec_init_method", "decoder_init_norm",
    "aux_loss_coefficient", "use_sparse_activations",
})
# Keys whose value decides what the SAE computes: honoured below, or refused by name.
SL_HONOURED = frozenset({
    "architecture", "d_in", "d_sae", "k", "activation_fn", "activation_fn_str",
    "activation_fn_kwargs", "hook_name", "hook_point", "hook_head_index", "hook_point_head_index",
    "apply_b_dec_to_input", "rescale_acts_by_decoder_norm", "normalize_activations",
    "finetuning_scaling_factor", "reshape_activations",
})
SL_NORMALIZE = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


def _sl_options(raw: dict, arch: str, where: str) -> dict:
    """Check every cfg.json key; return the options that change the weights (see load_saelens)."""
    unknown = sorted(set(raw) - SL_INFORMATIONAL - SL_HONOURED)
    if unknown:
        raise SAEFileError(f"{where}: unknown SAELens option(s) {unknown}; this loader knows "
                           f"{sorted(SL_HONOURED | SL_INFORMATIONAL)} and refuses what it does "
                           "not implement rather than ignore it")

    def flag(key: str, default: bool) -> bool:
        v = raw.get(key, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise SAEFileError(f"{where}: {key}={v!r} must be true or false")
        return v

    norm = raw.get("normalize_activations", "none")
    if norm is None or norm is False:
        norm = "none"
    elif norm is True:                     # SAELens < 6 wrote a boolean; True meant this one
        norm = "expected_average_only_in"
    if norm not in SL_NORMALIZE:
        raise SAEFileError(f"{where}: normalize_activations={norm!r} is not a SAELens option "
                           f"({', '.join(map(repr, SL_NORMALIZE))})")
    if norm == "expected_average_only_in":
        raise SAEFileError(
            f"{where}: normalize_activations='expected_average_only_in' is refused: the SAE was "
            "trained on activations scaled by a dataset constant that cfg.json does not hold "
            "(SAELens folds it in from its pretrained directory); fold the factor into the "
            "weights (W_enc *= c, W_dec /= c, b_dec /= c) and set normalize_activations='none'")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise SAEFileError(
            f"{where}: normalize_activations={norm!r} is refused: it rescales every input "
            "vector at run time (and the reconstruction back), which this SAE type does not "
            "implement; only 'none' is supported")
    if flag("finetuning_scaling_factor", False):
        raise SAEFileError(f"{where}: finetuning_scaling_factor=true is refused (a learned "
                           "per-latent scale on the codes is not implemented)")
    act = raw.get("activation_fn", raw.get("activation_fn_str"))
    want = {"relu": "relu", "topk": "topk", "jumprelu": "relu"}[arch]
    if act is not None and act != want:
        raise SAEFileError(f"{where}: activation_fn={act!r} is refused for architecture "
                           f"{raw.get('architecture', 'standard')!r} (expected {want!r})")
    reshape = raw.get("reshape_activations", "none") or "none"
    hook = str(raw.get("hook_name", raw.get("hook_point", "")))
    if reshape not in ("none", "hook_z") or (reshape == "hook_z" and not hook.endswith("hook_z")):
        raise SAEFileError(f"{where}: reshape_activations={reshape!r} is refused (only 'none', "
                           "or 'hook_z' on an attn.hook_z site, whose heads are read concatenated)")
    rescale = flag("rescale_acts_by_decoder_norm", False)
    if rescale and arch != "topk":
        raise SAEFileError(f"{where}: rescale_acts_by_decoder_norm=true is refused for architecture "
                           f"{raw.get('architecture')!r}; SAELens defines it for TopK SAEs only")
    return {"apply_b_dec_to_input": flag("apply_b_dec_to_input", True), "rescale": rescale}


@torch.no_grad()
def _fold_options(tensors: dict[str, torch.Tensor], opts: dict) -> None:
    """Rewrite SAELens weights so that our (x - b_dec) W_enc + b_enc computes SAELens's codes.

    apply_b_dec_to_input=false: SAELens's pre = x W_enc + b_enc = (x - b_dec) W_enc
        + (b_enc + b_dec W_enc), so b_enc += b_dec W_enc.
    rescale_acts_by_decoder_norm=true (TopK): SAELens's pre = (x W_enc' + b_enc) ⊙ n with
        n_i = ||W_dec[i]||, codes = TopK(pre), x^ = (codes / n) W_dec + b_dec; so W_enc *= n,
        b_enc *= n, W_dec /= n (rows) give the same codes and reconstruction (SAELens's own
        fold_W_dec_norm for TopK).
    """
    W_enc, b_enc = tensors["W_enc"].double(), tensors["b_enc"].double()
    W_dec, b_dec = tensors["W_dec"].double(), tensors["b_dec"].double()
    if not opts["apply_b_dec_to_input"]:
        b_enc = b_enc + b_dec @ W_enc
    if opts["rescale"]:
        n = W_dec.norm(dim=-1)
        if not bool((n > 0).all()):
            raise SAEFileError("rescale_acts_by_decoder_norm=true with a zero decoder row: "
                               "the codes are undefined")
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    dtype = tensors["W_enc"].dtype
    tensors.update(W_enc=W_enc.to(dtype), b_enc=b_enc.to(dtype), W_dec=W_dec.to(dtype))


def load_saelens(directory: str | Path) -> SAE:
    """An SAE from SAELens's cfg.json + sae_weights.safetensors (standard/relu, topk, jumprelu).

    Every cfg.json key is either informational (`SL_INFORMATIONAL`: provenance, placement,
    training hyperparameters), honoured, or refused by name with `SAEFileError`:
    ``apply_b_dec_to_input`` and ``rescale_acts_by_decoder_norm`` (TopK) are honoured exactly as
    SAELens defines them, by folding them into the weights (`_fold_options`);
    ``normalize_activations`` other than ``none`` and ``finetuning_scaling_factor`` are refused.
    """
    d = Path(directory)
    where = str(d / SL_CONFIG)
    raw = _read_json(d / SL_CONFIG)
    arch = str(raw.get("architecture", "standard")).lower()
    act = raw.get("activation_fn", raw.get("activation_fn_str"))
    if arch == "standard" and act == "topk" and (raw.get("activation_fn_kwargs") or {}).get("k"):
        arch = "topk"                      # SAELens < 6 wrote TopK SAEs as standard + topk
    ours = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(arch)
    if ours is None:
        raise SAEFileError(f"{where!r}: architecture={raw.get('architecture')!r} is not "
                           "supported; supported are 'standard', 'topk', 'jumprelu'")
    arch = ours
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SAEFileError(f"{where!r} lacks integer d_in and d_sae ({exc})") from exc
    opts = _sl_options(raw, arch, repr(where))
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    if arch == "topk" and not k:
        raise SAEFileError(f"{where!r}: a TopK SAE needs k (cfg key 'k' or activation_fn_kwargs.k)")
    hook = str(raw.get("hook_name", raw.get("hook_point", "")))
    site = _site_from_hook(hook)
    head = raw.get("hook_head_index", raw.get("hook_point_head_index"))
    cfg = SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=int(k or 32), site=site,
                    head=int(head) if head is not None and site.startswith("attn_z") else None,
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
    sae = _fill(make_sae(cfg), tensors, d / SL_WEIGHTS)   # shapes checked before any fold
    if not opts["apply_b_dec_to_input"] or opts["rescale"]:
        _fold_options(tensors, opts)
        sae = _fill(make_sae(cfg), tensors, d / SL_WEIGHTS)
    return sae
