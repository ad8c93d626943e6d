"""Sparse autoencoders on any hook site: train, load, encode, inspect, steer, find circuits.

    from workbench.saes import SAEConfig, TrainConfig, train_sae, splice, reconstruction_metrics
    res = train_sae(s, corpus, SAEConfig("topk", 576, 9216, site="resid_post:15", k=64))
    with splice(s, res.sae):            # the model runs on the SAE's reconstruction
        s.next_token("The capital of France is")

Modules: config (dataclasses), base/relu/topk/jumprelu (one file per SAE type), io (safetensors
+ JSON, SAELens layout), train, metrics, splice, features, circuits (discrete codes per head),
attribution (sparse feature circuits), transcoder / transcoder_train (sparse replacements of
FFN layers: model, save / load / splice; training several layers from one stream, metrics).
"""

from .attribution import (
    AttributionResult,
    FeatureEffect,
    attribution_patching,
    real_patch_effect,
    verify,
)
from .base import SAE, SAEOutput
from .circuits import (
    CircuitConfig,
    CircuitResult,
    find_circuit,
    head_code_scores,
    head_patching_importance,
)
from .config import ARCHITECTURES, SAEConfig, SAEConfigError, TrainConfig
from .evaluate import SAEEvaluation, evaluate_sae
from .features import (
    FeatureHarvest,
    PromptCodes,
    VocabReading,
    decoder_directions,
    decoder_vocab,
    encode_prompts,
    feature_contexts,
    harvest_features,
)
from .io import SAEFileError, load_sae, load_saelens, save_sae
from .jumprelu import JumpReluSAE
from .metrics import (
    ReconstructionMetrics,
    SpliceMetrics,
    next_token_ce,
    reconstruction_metrics,
    splice_metrics,
)
from .models import SAE_CLASSES, make_sae
from .relu import ReluSAE
from .sites import check_sae_site, site_d_in, to_vectors
from .splice import (
    FeatureEdit,
    FeatureOutOfRange,
    ablate_feature,
    set_feature,
    splice,
    splice_hook,
    steer_feature,
)
from .steering import SteerOutcome, steer_outcome
from .tasks import TASKS, CircuitTask, TaskUnavailable, load_task
from .topk import TopKSAE
from .train import TrainResult, train_sae
from .transcoder import (
    Transcoder,
    TranscoderConfig,
    TranscoderMismatch,
    load_transcoder,
    load_transcoders,
    save_transcoder,
    splice_transcoder,
)
from .transcoder_train import (
    TranscoderMetrics,
    TranscoderResult,
    TranscoderTrainConfig,
    train_transcoder,
    train_transcoders,
    transcoder_metrics,
)

__all__ = [
    "AttributionResult", "FeatureEffect", "attribution_patching", "real_patch_effect", "verify",
    "CircuitConfig", "CircuitResult", "find_circuit", "head_code_scores", "head_patching_importance",
    "TASKS", "CircuitTask", "TaskUnavailable", "load_task",
    "SAE", "SAEOutput", "ARCHITECTURES", "SAEConfig", "SAEConfigError", "TrainConfig",
    "FeatureHarvest", "PromptCodes", "VocabReading", "decoder_directions", "decoder_vocab",
    "encode_prompts", "feature_contexts", "harvest_features",
    "SAEFileError", "load_sae", "load_saelens", "save_sae", "JumpReluSAE",
    "ReconstructionMetrics", "SpliceMetrics", "next_token_ce", "reconstruction_metrics",
    "splice_metrics", "SAE_CLASSES", "make_sae", "ReluSAE", "check_sae_site", "site_d_in",
    "to_vectors", "SAEEvaluation", "evaluate_sae", "FeatureEdit", "FeatureOutOfRange", "ablate_feature", "set_feature", "splice",
    "splice_hook", "steer_feature", "SteerOutcome", "steer_outcome", "TopKSAE", "TrainResult", "train_sae",
    "Transcoder", "TranscoderConfig", "TranscoderMismatch", "load_transcoder", "load_transcoders", "save_transcoder",
    "splice_transcoder", "TranscoderMetrics", "TranscoderResult", "TranscoderTrainConfig", "train_transcoder",
    "train_transcoders", "transcoder_metrics",
]
