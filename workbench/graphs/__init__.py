"""Circuits as graphs: exact attribution graphs over FFN memories or transcoders (issue 19).

    from workbench.graphs import build_graph
    g = build_graph(s, "The Eiffel Tower is located in the city of", target=" Paris")
    g.summary, g.to_dict()                      # graph.json
    g = build_graph(s, prompt, " Paris", basis="transcoder", transcoders="out/transcoders")

Modules: weights (the model as tensors), basis (what each FFN layer is made of: units,
transcoder latents, error nodes), frozen (the frozen local linear model), transcoders (the
transcoder basis of one prompt), edges (batched VJPs through its transpose), build (candidate
selection and adjacency), prune (influence, pruning, completeness / replacement), result (the
frozen `AttributionGraph`), graph (`build_graph`), faithfulness (ablations in the real model),
contrastive (clean / corrupt pairs), cards (memory cards of unit nodes), diff (graphs before /
after an edit). Transcoders train with `workbench.saes.transcoder_train.train_transcoders`
(`workbench sae train --transcoder`). The ``sae`` basis (residual SAE features) is not built.
"""

from .basis import Basis, LayerBasis, unit_basis
from .build import LogitNodes, RawGraph, attribute
from .cards import MemoryCard, memory_card, memory_cards
from .config import BASES, OTHER_LAYERS, GraphConfig, GraphConfigError, UnknownBasisError
from .contrastive import contrastive_faithfulness, contrastive_graph
from .diff import EdgeChange, GraphDiff, NodeChange, graph_diff
from .edges import total_derivatives
from .faithfulness import Faithfulness, faithfulness, predicted_effects, spearman
from .frozen import Frozen, FrozenRun, PromptTooLongError, freeze, run
from .graph import build_graph, logit_nodes
from .prune import PruneResult, influence, normalized, prune, scores
from .result import SUMMARY_KEYS, AttributionGraph, GraphNode
from .transcoders import Transcoders, resolve_transcoders, transcoder_basis
from .weights import ModelWeights, UnsupportedModelError, model_weights

__all__ = [
    "LogitNodes", "RawGraph", "attribute", "BASES", "GraphConfig", "GraphConfigError", "UnknownBasisError",
    "Faithfulness", "faithfulness", "predicted_effects", "spearman", "Frozen", "FrozenRun",
    "PromptTooLongError", "freeze", "run", "build_graph", "logit_nodes", "PruneResult", "influence",
    "normalized", "prune", "scores", "SUMMARY_KEYS", "AttributionGraph", "GraphNode", "ModelWeights",
    "UnsupportedModelError", "model_weights", "MemoryCard", "memory_card", "memory_cards",
    "contrastive_faithfulness", "contrastive_graph", "total_derivatives", "EdgeChange", "GraphDiff", "NodeChange", "graph_diff",
    "Basis", "LayerBasis", "unit_basis", "OTHER_LAYERS", "Transcoders", "resolve_transcoders", "transcoder_basis",
]
