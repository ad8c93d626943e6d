"""Transcoders: a sparse replacement of one layer's FFN (Dunefsky et al. 2024; circuit-tracer).

    pre   = (x - b_dec_in) W_enc + b_enc          x: the FFN's normalised input (site mlp_in:l)
    f     = ReLU(TopK_k(pre))                     [... d_tc], L0 <= k
    y^    = f W_dec + b_dec (+ x W_skip)          target: the raw FFN output (site mlp_out:l)

The optional affine skip W_skip [d_model d_model] carries the FFN's linear part, so latents
spend their capacity on the rest. Trained by `train_transcoder` on corpus activations with
Adam on the summed squared error of y / s_y (s_y the target's spread per dimension, folded back
into W_dec, b_dec, W_skip at the end); FVU = MSE / variance of y (`transcoder_train`: several
layers from one activation stream, a sparse TopK step, held-out FVU / L0 / loss recovered).
Saved as transcoder.json (config, with the model's name and layer) + transcoder.safetensors;
`load_transcoder(dir, session, layer)` refuses one trained for another model, layer or width
(`TranscoderMismatch`); `load_transcoders(dir, session)` reads every transcoder under a folder.
`splice_transcoder` runs the model with a transcoder's output in place of its FFN's.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._types import Float, Tensor
from ..errors import WorkbenchError
from ..hooks import Site
from ..session import Session
from .config import SAEConfigError

__all__ = ["TranscoderConfig", "Transcoder", "TranscoderMismatch", "save_transcoder", "load_transcoder",
           "load_transcoders", "check_transcoder", "read_transcoder_config", "transcoder_dirs",
           "splice_transcoder"]

CONFIG, WEIGHTS = "transcoder.json", "transcoder.safetensors"


class TranscoderMismatch(WorkbenchError):
    """A transcoder trained for another model, layer or width than the one it is used with."""


@dataclass
class TranscoderConfig:
    """Shape and provenance of one transcoder.

    Args:
        d_model: width of the FFN input and output.
        d_tc: number of latents.
        k: active latents per token (TopK).
        layer: the FFN it replaces (input mlp_in:layer, target mlp_out:layer).
        skip: learn an affine skip x W_skip.
        model: the session's model name (checked on use).
        skip_first_position: trained without each window's first token (the attention sink);
            attribution graphs then give position 0 no latents, only its error node.
    """

    d_model: int = 576
    d_tc: int = 576 * 8
    k: int = 32
    layer: int = 0
    skip: bool = True
    model: str = ""
    skip_first_position: bool = True

    def __post_init__(self):
        for name in ("d_model", "d_tc", "k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SAEConfigError(f"{name}={v!r} must be a positive integer")
        if self.k > self.d_tc:
            raise SAEConfigError(f"k={self.k} is out of range; valid range is 1..{self.d_tc} (d_tc)")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise SAEConfigError(f"layer={self.layer!r} must be a non-negative integer")

    @property
    def input_site(self) -> Site:
        return Site("mlp_in", self.layer)

    @property
    def output_site(self) -> Site:
        return Site("mlp_out", self.layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranscoderConfig:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise SAEConfigError(f"unknown transcoder config keys {bad}; valid: {sorted(names)}")
        return cls(**d)


class Transcoder(nn.Module):
    """TopK transcoder; see the module docstring for the maths."""

    def __init__(self, cfg: TranscoderConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_model, cfg.d_tc
        g = torch.Generator().manual_seed(0)
        w = torch.randn(n, d, generator=g) / math.sqrt(d)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.zeros(n, d))  # starts at y^ = b_dec (FVU 1); Adam grows it
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.b_dec_in = nn.Parameter(torch.zeros(d))
        self.W_skip = nn.Parameter(torch.zeros(d, d)) if cfg.skip else None

    def pre_acts(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        return (x.to(self.W_enc.dtype) - self.b_dec_in) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def decode(self, codes: Float[Tensor, "... d_tc"], x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        out = codes @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            out = out + x.to(self.W_skip.dtype) @ self.W_skip
        return out

    def forward(self, x: Float[Tensor, "... d_model"]) -> tuple[Tensor, Tensor]:
        """(prediction of the FFN output, codes)."""
        codes = self.encode(x)
        return self.decode(codes, x), codes


def save_transcoder(tc: Transcoder, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tc.state_dict().items()}, str(d / WEIGHTS))
    (d / CONFIG).write_text(json.dumps(tc.cfg.to_dict(), indent=2), encoding="utf-8")
    return d


def check_transcoder(session: Session, tc: Transcoder, layer: int | None = None) -> Transcoder:
    """Raise TranscoderMismatch unless `tc` was trained for `session`'s model (and `layer`)."""
    c = tc.cfg
    if c.model and c.model != session.name:
        raise TranscoderMismatch(f"transcoder for layer {c.layer} was trained on model {c.model!r}, not "
                                 f"{session.name!r}")
    if c.d_model != session.d_model:
        raise TranscoderMismatch(f"transcoder reads d_model={c.d_model}; model {session.name!r} has "
                                 f"d_model={session.d_model}")
    session.check_layer(c.layer)
    if layer is not None and c.layer != layer:
        raise TranscoderMismatch(f"transcoder replaces layer {c.layer}'s FFN, not layer {layer}")
    return tc


def load_transcoder(directory: str | Path, session: Session | None = None, layer: int | None = None,
                    device: str | torch.device = "cpu") -> Transcoder:
    """Load transcoder.json + transcoder.safetensors; checked against `session` when given."""
    from safetensors.torch import load_file

    from .io import SAEFileError

    d = Path(directory)
    if not (d / WEIGHTS).exists():
        raise SAEFileError(f"{str(d)!r} is not a transcoder directory ({CONFIG} + {WEIGHTS})")
    tc = Transcoder(read_transcoder_config(d))
    tensors = load_file(str(d / WEIGHTS))
    want = tc.state_dict()
    if set(tensors) != set(want) or any(tensors[k].shape != want[k].shape for k in want):
        raise SAEFileError(f"{str(d / WEIGHTS)!r} holds {sorted(tensors)} with shapes that do not fit the config")
    tc.load_state_dict(tensors)
    if session is not None:
        check_transcoder(session, tc, layer)
    return tc.to(device).eval()


def read_transcoder_config(directory: str | Path) -> TranscoderConfig:
    """The config of a saved transcoder (no weights read: commands check it before loading)."""
    from .io import SAEFileError

    d = Path(directory)
    if not (d / CONFIG).is_file():
        raise SAEFileError(f"{str(d)!r} is not a transcoder directory ({CONFIG} + {WEIGHTS})")
    try:
        raw = json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SAEFileError(f"{str(d / CONFIG)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SAEFileError(f"{str(d / CONFIG)!r} holds {type(raw).__name__}, not a transcoder config")
    return TranscoderConfig.from_dict(raw)


def transcoder_dirs(directory: str | Path) -> list[Path]:
    """The transcoder folders under `directory`: itself if it is one, else its sub-folders that
    are (`workbench sae train --transcoder` writes OUT/layer_LL), sorted by name."""
    from .io import SAEFileError

    d = Path(directory)
    if (d / CONFIG).is_file():
        return [d]
    found = sorted(p for p in d.iterdir() if (p / CONFIG).is_file()) if d.is_dir() else []
    if not found:
        saes = [p for p in [d, *(sorted(d.iterdir()) if d.is_dir() else [])] if (p / "sae.json").is_file()]
        if saes:
            try:
                site = json.loads((saes[0] / "sae.json").read_text(encoding="utf-8")).get("site")
            except (ValueError, AttributeError):
                site = None
            raise TranscoderMismatch(f"{str(saes[0])!r} holds an SAE of site {site!r}, not a transcoder: a "
                                     "transcoder maps an FFN's input mlp_in:L to its output mlp_out:L "
                                     "(`workbench sae train --transcoder --layer L`)")
        raise SAEFileError(f"{str(d)!r} holds no transcoder ({CONFIG} + {WEIGHTS}, in it or in a sub-folder)")
    return found


def load_transcoders(directory: str | Path, session: Session | None = None,
                     device: str | torch.device = "cpu") -> dict[int, Transcoder]:
    """Every transcoder under `directory` (see `transcoder_dirs`), keyed by layer; checked against
    `session` when given. Two transcoders for one layer are an error."""
    out: dict[int, Transcoder] = {}
    for d in transcoder_dirs(directory):
        tc = load_transcoder(d, session, device=device)
        if tc.cfg.layer in out:
            raise TranscoderMismatch(f"two transcoders replace layer {tc.cfg.layer}'s FFN under {str(directory)!r}")
        out[tc.cfg.layer] = tc
    return dict(sorted(out.items()))


@contextlib.contextmanager
def splice_transcoder(session: Session, transcoders: Transcoder | Sequence[Transcoder], mode: str = "replace",
                      skip_first: bool = True) -> Iterator[None]:
    """Run the model with each transcoder's output (``mode='replace'``) or zero (``'zero'``) in
    place of its layer's raw FFN output (site mlp_out), at every position but the first when
    `skip_first` (the attention sink, left out of training). Scoped hooks, removed on exit."""
    if mode not in ("replace", "zero"):
        raise WorkbenchError(f"mode={mode!r} is unknown; valid modes are 'replace', 'zero'")
    tcs = [transcoders] if isinstance(transcoders, Transcoder) else list(transcoders)
    hooks = []
    for tc in tcs:
        check_transcoder(session, tc)
        stash: dict[str, Tensor] = {}

        def grab(act, hook=None, stash=stash):
            stash["x"] = act

        def put(act, hook=None, stash=stash, tc=tc):
            x = stash.pop("x")
            if mode == "zero":
                new = torch.zeros_like(act)
            else:
                with torch.no_grad():
                    new = tc(x.to(tc.W_enc.dtype))[0].to(act.dtype)
            if skip_first:
                new[:, 0] = act[:, 0]
            return new

        hooks += [(tc.cfg.input_site.hook_name, grab), (tc.cfg.output_site.hook_name, put)]
    with session.hooks(hooks):
        yield
