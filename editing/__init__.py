"""Locate and edit: causal tracing, ROME / MEMIT / AlphaEdit edits with exact undo, the edit
ledger, blast radius, and the one edit-evaluation loop (`run_edits`)."""

from ._prompts import EditError, SubjectNotFound, locate_subject
from .alphaedit import (
    AlphaEditConfig,
    AlphaEditState,
    compute_alphaedit_update,
    null_space_projector,
)
from .apply import RestoreHandle, active_edits, apply
from .blast import BlastRadius, auroc, blast_radius, prompt_reach
from .capability import held_windows, known_accuracy, perplexity
from .covariance import KeyStats, key_stats, layers_key_stats
from .evaluate import (
    CaseScores,
    EditCase,
    KnownFact,
    case_target_ids,
    case_token_ids,
    generate_texts,
    generation_entropy,
    load_counterfact,
    load_known,
    load_zsre,
    score_case,
    score_cases,
    summarize,
    usable_cases,
)
from .ledger import Ledger, LedgerEntry
from .loop import METHODS, EditRun, default_layers, run_edits
from .memit import MemitConfig, compute_memit_update, critical_layers
from .requests import EditRequest, LayerUpdate, RankOneUpdate
from .rome import RomeConfig, compute_rome_update, context_prefixes
from .tracing import TraceConfig, TraceResult, embedding_std, ffn_peak_layer, trace_fact
from .zcache import ZCache

__all__ = [
    "EditError", "SubjectNotFound", "locate_subject",
    "AlphaEditConfig", "AlphaEditState", "compute_alphaedit_update", "null_space_projector",
    "RestoreHandle", "active_edits", "apply",
    "BlastRadius", "auroc", "blast_radius", "prompt_reach",
    "held_windows", "known_accuracy", "perplexity",
    "KeyStats", "key_stats", "layers_key_stats",
    "CaseScores", "EditCase", "KnownFact", "case_target_ids", "case_token_ids", "generate_texts",
    "generation_entropy", "load_counterfact", "load_known", "load_zsre", "score_case", "score_cases",
    "summarize", "usable_cases",
    "Ledger", "LedgerEntry",
    "METHODS", "EditRun", "default_layers", "run_edits",
    "MemitConfig", "compute_memit_update", "critical_layers",
    "EditRequest", "LayerUpdate", "RankOneUpdate", "RomeConfig", "compute_rome_update", "context_prefixes",
    "TraceConfig", "TraceResult", "embedding_std", "ffn_peak_layer", "trace_fact",
    "ZCache",
]
