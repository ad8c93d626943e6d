"""FF blocks through the lens of attention maps (Kobayashi, Kuribayashi, Yokoi, Inui, ICLR 2024).

`decompose_layer` / `decompose_all` split every vector a layer computes at position i into
contributions from each input position j, component by component (attention with its norm,
residual, frozen-scale norms, the FF block split by integrated gradients); `ffmaps` turns them
into the paper's contextualisation maps with per-layer FF statistics and amplified token pairs;
`ff_change_summary` averages the statistics over prompts.
"""

from ._decompose import RULES, LayerDecomposition, decompose_all, decompose_layer, ig_gated_split
from ._maps import (
    AmplifiedPair,
    FFChangeSummary,
    FFMaps,
    LayerMaps,
    ff_change_summary,
    ffmaps,
    layer_maps,
    row_shares,
)

__all__ = ["RULES", "LayerDecomposition", "decompose_all", "decompose_layer", "ig_gated_split",
           "AmplifiedPair", "FFChangeSummary", "FFMaps", "LayerMaps", "ff_change_summary", "ffmaps",
           "layer_maps", "row_shares"]
