"""SAE and training configurations: dataclasses validated in ``__post_init__``, JSON round-trip.

An SAE reads one hook site (see `workbench.hooks`). For per-head sites (``attn_z``,
``head_out``) `head` picks one head, or ``None`` concatenates all heads into one vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import WorkbenchError
from ..hooks import SITE_KINDS, parse_site

__all__ = ["SAEConfig", "TrainConfig", "SAEConfigError", "ARCHITECTURES"]

ARCHITECTURES = ("relu", "topk", "jumprelu")
PER_HEAD_KINDS = ("attn_z", "head_out")


class SAEConfigError(WorkbenchError):
    """An SAE or training configuration value out of its valid range."""


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise SAEConfigError(f"{name}={value!r} must be > 0")


@dataclass
class SAEConfig:
    """Shape and sparsity mechanism of one sparse autoencoder.

    Args:
        architecture: ``relu`` (ReLU + L1), ``topk`` (keep the k largest) or ``jumprelu``.
        d_in: width of the vectors it reads (d_model, d_mlp, d_head, or heads x width).
        d_sae: number of latents (e.g. 16 x d_in).
        site: the hook site it reads, ``"resid_post:15"`` (or "" when unattached).
        head: for per-head sites, the head it reads; None = all heads concatenated.
        k: active latents per token (topk only).
        l1_coefficient: weight of the L1 penalty sum_i |f_i| ||d_i|| (relu only).
        l0_coefficient: weight of the L0 penalty (jumprelu only).
        jumprelu_init_threshold: initial threshold theta (jumprelu only).
        jumprelu_bandwidth: width of the straight-through kernel (jumprelu only).
        skip_first_position: leave position 0 of every row alone (the attention-sink token
            whose residual norm is ~100x the others); it is neither trained on nor spliced.
        model: name of the model it was trained on (provenance only).
    """

    architecture: str = "topk"
    d_in: int = 576
    d_sae: int = 576 * 16
    site: str = ""
    head: int | None = None
    k: int = 32
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1e-3
    jumprelu_init_threshold: float = 1e-3
    jumprelu_bandwidth: float = 1e-3
    skip_first_position: bool = True
    model: str = ""

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise SAEConfigError(f"architecture={self.architecture!r} is unknown; choose one of "
                                 f"{', '.join(map(repr, ARCHITECTURES))}")
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SAEConfigError(f"{name}={v!r} must be a positive integer")
        if self.architecture == "topk" and not 1 <= self.k <= self.d_sae:
            raise SAEConfigError(f"k={self.k!r} is out of range; valid range is 1..{self.d_sae} (d_sae)")
        if self.architecture == "relu" and self.l1_coefficient < 0:
            raise SAEConfigError(f"l1_coefficient={self.l1_coefficient!r} must be >= 0")
        if self.architecture == "jumprelu":
            if self.l0_coefficient < 0:
                raise SAEConfigError(f"l0_coefficient={self.l0_coefficient!r} must be >= 0")
            _positive("jumprelu_init_threshold", self.jumprelu_init_threshold)
            _positive("jumprelu_bandwidth", self.jumprelu_bandwidth)
        if self.site:
            s = parse_site(self.site)
            if s.kind == "attn_pattern":
                raise SAEConfigError(f"site={self.site!r}: attention patterns are not vectors per "
                                     f"token; choose one of {', '.join(k for k in SITE_KINDS if k != 'attn_pattern')}")
            if self.head is not None and s.kind not in PER_HEAD_KINDS:
                raise SAEConfigError(f"head={self.head} is only meaningful for per-head sites "
                                     f"({', '.join(PER_HEAD_KINDS)}), not {s.kind}")
            self.site = str(s)
        if self.head is not None and (not isinstance(self.head, int) or self.head < 0):
            raise SAEConfigError(f"head={self.head!r} must be a non-negative integer or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """Build from a dict; unknown keys are an error naming the valid ones."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise SAEConfigError(f"unknown SAE config keys {bad}; valid keys are {sorted(names)}")
        return cls(**d)


@dataclass
class TrainConfig:
    """How to train an SAE from streamed activations.

    Args:
        total_tokens: training tokens (activation vectors) to consume, repeats included.
        batch_size: activation vectors per optimiser step.
        lr: Adam learning rate after warm-up.
        warmup_steps: linear learning-rate warm-up from 0.
        decay_fraction: final fraction of steps with linear decay to 0.
        window: tokens per corpus window (model context for each row).
        tokens_per_forward: tokens per model forward pass.
        buffer_tokens: shuffle buffer of activations held in memory (mixes windows).
        epochs: passes over the harvested activations; > 1 keeps them in memory.
        dead_after_tokens: a latent that has not fired for this many tokens is dead.
        aux_k: latents in the auxiliary (AuxK) loss on dead latents (topk; 0 = off).
        aux_coefficient: weight of the auxiliary loss.
        normalize: scale inputs so that E||x||^2 = d_in while training (folded into weights).
        checkpoint_every: save a checkpoint every N steps (0 = only at the end).
        eval_tokens: held-out tokens for the final reconstruction metrics.
        seed: initialisation and shuffling seed.
        device: ``auto`` (the session's device), ``cpu``, ``cuda``.
        amp: on CUDA, run the SAE's matmuls in bfloat16 autocast (weights and Adam stay fp32).
        sparse_step: TopK only: the step whose decoder (and, on the CPU, encoder gradient)
            touch only the picked latents (`workbench.saes.topk_sparse`; same values); None: on
            the CPU, and on CUDA where Triton is installed (its kernels: 21.9 against 47 ms per
            step at 65,536 latents on an H200, docs/GPU.md sessions 17 and 21).
        compile_step: run the dense step's forward and loss under `torch.compile` (fused
            elementwise work and dtype casts). Off by default: on an H200 (d_in 4096, batch
            4096, AuxK on 10% dead latents) the step alone took 100 -> 69 ms at 131,072 latents
            and 51 -> 35 ms at 65,536 (benches/sae_step.py), but training at the Llama-3.1-8B
            shape ran no faster in the loop (0.58x / 0.44x of the stream against 0.60x / 0.44x;
            docs/GPU.md, session 16), and each process pays tens of seconds of compiling.
    """

    total_tokens: int = 1_000_000
    batch_size: int = 4096
    lr: float = 4e-4
    warmup_steps: int = 100
    decay_fraction: float = 0.2
    window: int = 128
    tokens_per_forward: int = 8192
    buffer_tokens: int = 65536
    epochs: int = 1
    dead_after_tokens: int = 2_000_000
    aux_k: int = 256
    aux_coefficient: float = 1.0 / 32
    normalize: bool = True
    checkpoint_every: int = 0
    eval_tokens: int = 8192
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    sparse_step: bool | None = None
    compile_step: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("total_tokens", "batch_size", "window", "tokens_per_forward", "epochs",
                     "dead_after_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SAEConfigError(f"{name}={v!r} must be a positive integer")
        _positive("lr", self.lr)
        if self.warmup_steps < 0 or self.aux_k < 0 or self.checkpoint_every < 0 or self.eval_tokens < 0:
            raise SAEConfigError("warmup_steps, aux_k, checkpoint_every and eval_tokens must be >= 0")
        if not 0 <= self.decay_fraction < 1:
            raise SAEConfigError(f"decay_fraction={self.decay_fraction!r} must be in [0, 1)")
        if self.buffer_tokens < self.batch_size:
            raise SAEConfigError(f"buffer_tokens={self.buffer_tokens} must be >= batch_size={self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise SAEConfigError(f"unknown training config keys {bad}; valid keys are {sorted(names)}")
        return cls(**d)
