"""Linear probes (scikit-learn logistic or ridge) per layer, with Hewitt & Liang control tasks.

For activations ``X_l`` [n, d] at layer ``l``, labels ``y`` [n] and types ``t`` [n] (the token id
at each example), a probe is fitted on a random train split and scored on the held-out rest:

    accuracy_l          = mean(probe_l(X_l[test]) == y[test])
    control_accuracy_l  = the same with y replaced by the control task c = f(t), where f maps
                          each type to a label drawn once from the empirical label distribution
    selectivity_l       = accuracy_l - control_accuracy_l

A probe that only memorises token identity scores as well on the control task, so high
selectivity means the label is decodable beyond the token's type (Hewitt & Liang, 2019).
``chance`` is the held-out majority-class rate.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

__all__ = ["ProbeConfig", "LayerProbe", "LinearProbeResult", "control_labels", "fit_score",
           "probe_layers", "split_indices", "balance_indices", "make_estimator"]

log = logging.getLogger(__name__)

PROBE_MODELS = ("logistic", "ridge")


@dataclass(frozen=True)
class ProbeConfig:
    """How a probe is fitted.

    Args:
        model: ``logistic`` (multinomial logistic regression, lbfgs) or ``ridge`` (ridge
            classifier, closed form).
        C: inverse L2 strength for logistic; alpha = 1 / C for ridge.
        test_fraction: share of examples held out for scoring.
        max_iter: lbfgs iteration cap.
        seed: split and control-task seed.
    """

    model: str = "logistic"
    C: float = 1.0
    test_fraction: float = 0.25
    max_iter: int = 200
    seed: int = 0

    def __post_init__(self):
        if self.model not in PROBE_MODELS:
            raise ValueError(f"model={self.model!r} is not a probe model; choose one of {PROBE_MODELS}")
        if not self.C > 0:
            raise ValueError(f"C={self.C} must be > 0")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction} must be in (0, 1)")
        if self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter} must be >= 1")


@dataclass(frozen=True)
class LayerProbe:
    """Scores of one layer's probe (accuracies are fractions of held-out examples)."""

    layer: int
    accuracy: float
    control_accuracy: float
    selectivity: float
    train_accuracy: float
    chance: float
    control_chance: float
    seconds: float


@dataclass(frozen=True)
class LinearProbeResult:
    """Per-layer probe scores for one label at one site kind."""

    label: str
    site: str
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    n_train: int
    n_test: int
    n_types: int
    config: ProbeConfig
    layers: tuple[LayerProbe, ...]

    def best(self) -> LayerProbe:
        return max(self.layers, key=lambda r: r.selectivity)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        return d


def control_labels(types: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Control task: each distinct type gets one label drawn from the empirical distribution.

    Shapes: types [n], labels [n] -> [n]. Deterministic given `seed`.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    uniq, inv = np.unique(types, return_inverse=True)
    per_type = rng.choice(classes, size=len(uniq), p=counts / counts.sum())
    return per_type[inv]


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train / test index split (at least one example on each side)."""
    if n < 4:
        raise ValueError(f"n={n} examples are too few to train and test a probe (need >= 4)")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 2, max(2, int(round(n * test_fraction))))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def balance_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices that subsample every class to the size of the rarest one (sorted)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    k = counts.min()
    keep = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in classes]
    return np.sort(np.concatenate(keep))


def make_estimator(cfg: ProbeConfig, warm_start: bool = False):
    """The scikit-learn estimator of `cfg` (warm_start: refits start from the last solution)."""
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    if cfg.model == "ridge":
        return RidgeClassifier(alpha=1.0 / cfg.C)
    return LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, warm_start=warm_start)


def fit_score(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
              cfg: ProbeConfig, estimator=None) -> tuple[float, float]:
    """Standardise with train statistics, fit, and return (train accuracy, test accuracy).

    `estimator`: an estimator to (re)fit, e.g. a warm-started one shared across layers.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    mu = X_train.mean(0)
    sd = X_train.std(0) + 1e-6
    a, b = (X_train - mu) / sd, (X_test - mu) / sd
    if len(np.unique(y_train)) < 2:  # a constant label: the probe is the constant
        c = y_train[0]
        return float(np.mean(y_train == c)), float(np.mean(y_test == c))
    m = estimator if estimator is not None else make_estimator(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(a, y_train)
    return float(m.score(a, y_train)), float(m.score(b, y_test))


def _majority(y_train: np.ndarray, y_test: np.ndarray) -> float:
    vals, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(y_test == vals[counts.argmax()]))


def probe_layers(acts: np.ndarray, labels: np.ndarray, types: np.ndarray, *, label: str,
                 site: str, classes: tuple[str, ...], layers: list[int] | None = None,
                 cfg: ProbeConfig = ProbeConfig(), progress: bool = True) -> LinearProbeResult:
    """Fit a task probe and a control probe at every layer.

    Args:
        acts: [n, layer, d] activations (any float dtype; cast to float32 per layer).
        labels: [n] class indices into `classes`; types: [n] token ids (control types).
        layers: the layer index of each slice of `acts` (default 0..L-1).
    """
    import time

    n, n_layer, _ = acts.shape
    if labels.shape != (n,) or types.shape != (n,):
        raise ValueError(f"labels {labels.shape} and types {types.shape} must both be ({n},)")
    layers = list(range(n_layer)) if layers is None else list(layers)
    tr, te = split_indices(n, cfg.test_fraction, cfg.seed)
    ctrl = control_labels(types, labels, cfg.seed + 1)
    # consecutive layers differ little, so each layer's fit starts from the previous solution
    est_task, est_ctrl = make_estimator(cfg, warm_start=True), make_estimator(cfg, warm_start=True)
    out = []
    for i in tqdm(range(n_layer), desc=f"probe {label}", leave=False, disable=not progress):
        t0 = time.perf_counter()
        X = np.asarray(acts[:, i], dtype=np.float32)
        train_acc, acc = fit_score(X[tr], labels[tr], X[te], labels[te], cfg, est_task)
        _, c_acc = fit_score(X[tr], ctrl[tr], X[te], ctrl[te], cfg, est_ctrl)
        out.append(LayerProbe(layer=layers[i], accuracy=acc, control_accuracy=c_acc,
                              selectivity=acc - c_acc, train_accuracy=train_acc,
                              chance=_majority(labels[tr], labels[te]),
                              control_chance=_majority(ctrl[tr], ctrl[te]),
                              seconds=time.perf_counter() - t0))
    counts = tuple(int((labels == k).sum()) for k in range(len(classes)))
    return LinearProbeResult(label=label, site=site, classes=tuple(classes), class_counts=counts,
                             n_train=len(tr), n_test=len(te), n_types=len(np.unique(types)),
                             config=cfg, layers=tuple(out))
