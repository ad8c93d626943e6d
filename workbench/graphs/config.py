"""Settings of an attribution graph, validated on construction; the graphs' own errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import WorkbenchError

__all__ = ["BASES", "OTHER_LAYERS", "PREDICTIONS", "GraphConfig", "GraphConfigError", "UnknownBasisError"]

BASES = ("units", "transcoder", "sae")
PLANNED: tuple[str, ...] = ()  # bases named in issue 19 and not built yet
OTHER_LAYERS = ("units", "errors")
PREDICTIONS = ("graph", "live")


class GraphConfigError(WorkbenchError):
    """A graph setting out of its valid range."""


class UnknownBasisError(WorkbenchError):
    """A node basis the graph builder does not know."""


@dataclass(frozen=True)
class GraphConfig:
    """How a graph is built and pruned.

    Args:
        basis: ``units`` (FFN units, exact, no error nodes), ``transcoder`` (transcoder
            latents with one error node per layer and position; `build_graph` takes the
            transcoders) or ``sae`` (SAE features at residual sites resid_post:L with one error
            node per site and position, Marks et al. 2024; `build_graph` takes the SAEs).
        other_layers: with transcoders, what layers without one contribute; with SAEs, what
            every FFN layer contributes: ``units`` (their FFN units, as in the units basis) or
            ``errors`` (one error node per position).
        keep: node share: keep the smallest set of nodes whose influence on the chosen logits
            reaches this share of all nodes' influence (circuit-tracer's node threshold).
        edge_keep: edge share, the same rule over edges among kept nodes.
        max_nodes: candidate nodes whose incoming edges are computed, picked greedily by their
            estimated influence (bounds time: one backward row per candidate).
        max_logits: at most this many output-logit nodes (top tokens by probability) ...
        logit_prob: ... until their probabilities sum to this share (a named target is added).
        batch: targets per backward pass.
        memory_mb: budget for one block's full edge rows (batch is cut to fit).
        faithfulness_nodes: top unit nodes ablated in the real model for the faithfulness
            check (0 = skip it).
        faithfulness_factor: each tested node is scaled by this in the real model (0 =
            ablation, the default; between 0 and 1 a partial scaling, closer to the regime a
            linear graph describes). The contrastive check patches to the corrupt value instead.
        skip_first_position: units and latents at position 0 are not candidates (default:
            they are). Position 0 is the attention sink of both embedded models (BOS on Gemma,
            the first word on SmolLM2, which runs without BOS): heads put most of their weight
            there, so changing a unit there moves every attention pattern, which the frozen
            model holds fixed; ablated in the real model such units moved the target logit by
            up to 5 where the frozen model predicted a fraction of that. Left out, their share
            of each row stays in the row's total (completeness reports it), but on SmolLM2's
            fact prompts the pruned graphs then keep only 1-2 units: most FFN influence sits at
            the sink. The faithfulness check reports sink units apart either way.
        prediction: what the summary's `faithfulness_spearman` ranks against the measured
            effects: ``graph`` (the graph's own path sums in the frozen model) or ``live``
            (attribution patching: one backward pass of the real model, attention, norms and
            gates free; Marks et al. 2024's node scores). Both are always reported
            (`faithfulness_spearman_graph`, `faithfulness_spearman_live`). None (default):
            ``graph`` for target-logit graphs, ``live`` for contrastive ones.
    """

    basis: str = "units"
    other_layers: str = "units"
    keep: float = 0.8
    edge_keep: float = 0.98
    max_nodes: int = 300
    max_logits: int = 10
    logit_prob: float = 0.95
    batch: int = 64
    memory_mb: int = 512
    faithfulness_nodes: int = 20
    faithfulness_factor: float = 0.0
    skip_first_position: bool = False
    prediction: str | None = None

    def __post_init__(self):
        if self.basis not in BASES:
            what = "is not implemented" if self.basis in PLANNED else "is unknown"
            raise UnknownBasisError(f"basis={self.basis!r} {what}; valid bases are "
                                    f"{', '.join(map(repr, BASES))}")
        if self.other_layers not in OTHER_LAYERS:
            raise GraphConfigError(f"other_layers={self.other_layers!r} is unknown; valid: "
                                   f"{', '.join(map(repr, OTHER_LAYERS))}")
        for name in ("keep", "edge_keep", "logit_prob"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise GraphConfigError(f"{name}={v!r} is out of range; valid range is (0, 1]")
        if self.prediction is not None and self.prediction not in PREDICTIONS:
            raise GraphConfigError(f"prediction={self.prediction!r} is unknown; valid: "
                                   f"{', '.join(map(repr, PREDICTIONS))} (or None: the mode's default)")
        f = self.faithfulness_factor
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise GraphConfigError(f"faithfulness_factor={f!r} is out of range; valid range is [0, 1)")
        for name, lo in (("max_nodes", 1), ("max_logits", 1), ("batch", 1), ("memory_mb", 1),
                         ("faithfulness_nodes", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise GraphConfigError(f"{name}={v!r} must be an integer >= {lo}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphConfig:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise GraphConfigError(f"unknown graph settings {bad}; valid: {sorted(names)}")
        return cls(**d)
