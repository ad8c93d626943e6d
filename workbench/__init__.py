"""workbench: FFN memories, vocabulary projections, SAE codes and edits on one hooks layer.

Public API (data flows session -> hooks -> analyses):

    from workbench import Session, capture, intervene, zero_neurons
    s = Session.load()                                   # SmolLM2-135M-Instruct, offline
    cap = capture(s, "The Eiffel Tower is in", ["mlp_post:10", "resid_post:10"])
"""

from .capture import Capture, capture, capture_tokens
from .concepts import (
    Concept,
    ConceptEffect,
    ConceptSearch,
    boost_interventions,
    concept_effect,
    concept_search,
    concept_tokens,
    load_concept,
    random_interventions,
)
from .corpus import Corpus, WindowBatch
from .errors import (
    CorpusError,
    EmptyPromptError,
    HeadOutOfRange,
    LayerOutOfRange,
    NeuronOutOfRange,
    NonFiniteError,
    PositionOutOfRange,
    ShapeError,
    TokenError,
    UnknownModelError,
    UnknownSiteError,
    WorkbenchError,
)
from .fastpath import CompiledCapture, GraphCapture, compiled_capture
from .ffn import FFNWeights, ffn_output, ffn_weights
from .hooks import (
    SITE_KINDS,
    Intervention,
    Site,
    ablate_heads,
    add_vector,
    intervene,
    parse_site,
    patch,
    scale_heads,
    scale_neurons,
    set_neurons,
    site,
    sites,
    zero_neurons,
)
from .memories import MemoryExample, MemoryIndex, harvest, index_from_merged
from .memory_agreement import AgreementTable, agreement, value_top_ids
from .models import DEFAULT_MODEL, EMBEDDED
from .moe import (
    Experts,
    ExpertShares,
    Sparsity,
    activation_sparsity,
    cluster_experts,
    expert_shares,
    random_experts,
)
from .session import Session, SessionClosedError, TokenBatch
from .vocab import (
    DistributionChange,
    LogitLens,
    SubUpdate,
    SubUpdates,
    TokenScore,
    ValueTokens,
    ffn_sub_updates,
    logit_lens,
    memory_intervention,
    top_tokens,
    value_logits,
    value_tokens,
)

__all__ = [
    "Capture", "capture", "capture_tokens", "Corpus", "WindowBatch",
    "CorpusError", "EmptyPromptError", "HeadOutOfRange", "LayerOutOfRange", "NeuronOutOfRange",
    "NonFiniteError", "PositionOutOfRange", "ShapeError", "TokenError", "UnknownModelError",
    "UnknownSiteError", "WorkbenchError",
    "FFNWeights", "ffn_output", "ffn_weights",
    "SITE_KINDS", "Intervention", "Site", "ablate_heads", "add_vector", "intervene", "parse_site",
    "patch", "scale_heads", "scale_neurons", "set_neurons", "site", "sites", "zero_neurons",
    "DEFAULT_MODEL", "EMBEDDED", "Session", "SessionClosedError", "TokenBatch",
    "CompiledCapture", "GraphCapture", "compiled_capture",
    "MemoryExample", "MemoryIndex", "harvest", "index_from_merged", "AgreementTable", "agreement",
    "value_top_ids", "DistributionChange", "LogitLens", "SubUpdate", "SubUpdates", "TokenScore",
    "ValueTokens", "ffn_sub_updates", "logit_lens", "memory_intervention", "top_tokens", "value_logits",
    "value_tokens", "Concept", "ConceptEffect", "ConceptSearch", "boost_interventions", "concept_effect",
    "concept_search", "concept_tokens", "load_concept", "random_interventions",
    "Experts", "ExpertShares", "Sparsity", "activation_sparsity", "cluster_experts", "expert_shares",
    "random_experts",
]
