"""Locate and edit: causal tracing, ROME rank-one edits with exact undo, edit evaluation."""

from ._prompts import EditError, SubjectNotFound, locate_subject
from .apply import RestoreHandle, active_edits, apply
from .covariance import KeyStats, key_stats
from .evaluate import (
    CaseScores,
    EditCase,
    KnownFact,
    case_token_ids,
    generate_texts,
    generation_entropy,
    load_counterfact,
    load_known,
    score_case,
    summarize,
)
from .requests import EditRequest, RankOneUpdate
from .rome import RomeConfig, compute_rome_update, context_prefixes
from .tracing import TraceConfig, TraceResult, embedding_std, ffn_peak_layer, trace_fact

__all__ = [
    "EditError", "SubjectNotFound", "locate_subject",
    "RestoreHandle", "active_edits", "apply",
    "KeyStats", "key_stats",
    "CaseScores", "EditCase", "KnownFact", "case_token_ids", "generate_texts", "generation_entropy",
    "load_counterfact", "load_known", "score_case", "summarize",
    "EditRequest", "RankOneUpdate", "RomeConfig", "compute_rome_update", "context_prefixes",
    "TraceConfig", "TraceResult", "embedding_std", "ffn_peak_layer", "trace_fact",
]
