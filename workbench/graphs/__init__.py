"""Circuits as graphs: exact attribution graphs over FFN memories, transcoders or SAEs (issue 19).

    from workbench.graphs import build_graph
    g = build_graph(s, "The Eiffel Tower is located in the city of", target=" Paris")
    g.summary, g.to_dict()                      # graph.json
    g = build_graph(s, prompt, " Paris", basis="transcoder", transcoders="out/transcoders")
    g = build_graph(s, prompt, " Paris", basis="sae", saes="out/saes")   # SAEs at resid_post:L

Modules: weights (the model as tensors), basis (what each FFN layer and SAE site is made of:
units, transcoder latents, SAE features, error nodes), frozen (the frozen local linear model),
transcoders (the transcoder basis of one prompt), sae_sites (the SAE basis: SAE features at
residual sites with error nodes, Marks et al. 2024), edges (batched VJPs through its transpose), build (candidate
selection and adjacency), prune (influence, pruning, completeness / replacement), result (the
frozen `AttributionGraph`), graph (`build_graph`), faithfulness (ablations in the real model),
live (attribution patching: the real model's gradient at a node's site, beside the graph's
prediction), contrastive (clean / corrupt pairs), heads (a contrastive circuit's attention heads
by attribution patching, scored against head patching), cards (`workbench.memory_cards.MemoryCard`s of unit nodes),
diff (graphs before / after an edit). Transcoders train with `workbench.saes.transcoder_train.train_transcoders`
(`workbench sae train --transcoder`); SAEs with `workbench.saes.train_sae` (`workbench sae train
--site resid_post:L`) or come from SAELens folders.
"""

from .basis import Basis, LayerBasis, unit_basis
from .build import LogitNodes, RawGraph, attribute
from .cards import memory_cards
from .config import (
    BASES,
    OTHER_LAYERS,
    PREDICTIONS,
    GraphConfig,
    GraphConfigError,
    UnknownBasisError,
)
from .contrastive import contrastive_faithfulness, contrastive_graph
from .diff import EdgeChange, GraphDiff, NodeChange, graph_diff
from .edges import total_derivatives
from .faithfulness import Faithfulness, faithfulness, predicted_effects, spearman
from .frozen import Frozen, FrozenRun, PromptTooLongError, freeze, run
from .graph import build_graph, logit_nodes
from .heads import (
    HeadComparison,
    HeadImportance,
    compare_heads,
    head_effects,
    head_importance,
    top_heads,
)
from .live import FROZEN_PARTS, LIVE_SITES, live_gradients
from .prune import PruneResult, influence, normalized, prune, scores
from .result import SUMMARY_KEYS, AttributionGraph, GraphNode
from .sae_sites import SAE_SITES, SAEBasisError, SAEs, load_saes, resolve_saes, sae_basis
from .transcoders import Transcoders, resolve_transcoders, transcoder_basis
from .weights import ModelWeights, UnsupportedModelError, model_weights

__all__ = [
    "LogitNodes", "RawGraph", "attribute", "BASES", "GraphConfig", "GraphConfigError", "UnknownBasisError",
    "Faithfulness", "faithfulness", "predicted_effects", "spearman", "Frozen", "FrozenRun",
    "PromptTooLongError", "freeze", "run", "build_graph", "logit_nodes", "PruneResult", "influence",
    "normalized", "prune", "scores", "SUMMARY_KEYS", "AttributionGraph", "GraphNode", "ModelWeights",
    "UnsupportedModelError", "model_weights", "memory_cards",
    "contrastive_faithfulness", "contrastive_graph", "total_derivatives", "EdgeChange", "GraphDiff", "NodeChange", "graph_diff",
    "Basis", "LayerBasis", "unit_basis", "OTHER_LAYERS", "Transcoders", "resolve_transcoders", "transcoder_basis",
    "SAE_SITES", "SAEBasisError", "SAEs", "load_saes", "resolve_saes", "sae_basis",
    "PREDICTIONS", "FROZEN_PARTS", "LIVE_SITES", "live_gradients",
    "HeadComparison", "HeadImportance", "compare_heads", "head_effects", "head_importance", "top_heads",
]
