"""Linear probes: a planted, linearly decodable label is found; its control task stays at chance."""

from __future__ import annotations

import numpy as np
import pytest

from probes.linear import (
    ProbeConfig,
    balance_indices,
    control_labels,
    fit_score,
    probe_layers,
    split_indices,
)


def planted(n=1500, d=24, n_types=300, seed=0):
    """Layer 0: pure noise; layers 1, 2: the label is the sign of a fixed direction."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3, d)).astype(np.float32)
    w = rng.standard_normal(d)
    y = (X[:, 1] @ w > 0).astype(np.int64)
    X[:, 2] = X[:, 1] * 2.0 + 0.5  # same information, another scale: standardisation copes
    types = rng.integers(0, n_types, size=n)  # token types unrelated to the features
    return X, y, types


@pytest.mark.parametrize("model", ["logistic", "ridge"])
def test_planted_label_is_decoded_and_control_stays_at_chance(model):
    X, y, types = planted()
    res = probe_layers(X, y, types, label="planted", site="synthetic", classes=("no", "yes"),
                       cfg=ProbeConfig(model=model, seed=3), progress=False)
    noise, l1, l2 = res.layers
    for lay in (l1, l2):
        assert lay.accuracy >= 0.95, lay
        # the control task (random label per type) cannot be read from type-free features
        assert abs(lay.control_accuracy - lay.control_chance) < 0.08, lay
        assert lay.selectivity > 0.35
    assert abs(noise.accuracy - noise.chance) < 0.08  # nothing to decode at layer 0
    assert res.best().layer in (1, 2)
    assert res.n_train + res.n_test == len(y)
    assert sum(res.class_counts) == len(y)


def test_control_task_memorises_types_when_features_encode_the_type():
    """When the features are one-hot token types, the control task is learnable (high control
    accuracy) and a type-determined label has ~zero selectivity: what H&L controls detect."""
    rng = np.random.default_rng(0)
    n, n_types = 2000, 40
    types = rng.integers(0, n_types, size=n)
    X = np.eye(n_types, dtype=np.float32)[types][:, None, :]
    y = (types % 2).astype(np.int64)
    res = probe_layers(X, y, types, label="parity", site="onehot", classes=("no", "yes"),
                       cfg=ProbeConfig(C=10.0), progress=False)
    lay = res.layers[0]
    assert lay.accuracy > 0.98 and lay.control_accuracy > 0.98
    assert abs(lay.selectivity) < 0.03


def test_control_labels_are_a_function_of_type_with_the_label_distribution():
    rng = np.random.default_rng(1)
    types = rng.integers(0, 2000, size=20000)
    labels = (rng.random(20000) < 0.3).astype(np.int64)
    c = control_labels(types, labels, seed=5)
    for t in np.unique(types)[:50]:
        assert len(np.unique(c[types == t])) == 1
    per_type = np.array([c[types == t][0] for t in np.unique(types)])
    assert abs(per_type.mean() - 0.3) < 0.04
    assert np.array_equal(c, control_labels(types, labels, seed=5))


def test_split_and_balance():
    tr, te = split_indices(100, 0.25, 0)
    assert len(te) == 25 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 100
    y = np.array([0] * 90 + [1] * 10)
    idx = balance_indices(y, 0)
    assert (y[idx] == 0).sum() == (y[idx] == 1).sum() == 10
    with pytest.raises(ValueError, match="n=3"):
        split_indices(3, 0.25, 0)


def test_constant_training_label_is_handled():
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    y = np.zeros(20, dtype=np.int64)
    assert fit_score(X[:15], y[:15], X[15:], y[15:], ProbeConfig()) == (1.0, 1.0)


@pytest.mark.parametrize("kw, match", [({"model": "svm"}, "model='svm'"), ({"C": 0}, "C=0"),
                                        ({"test_fraction": 1.5}, "test_fraction=1.5")])
def test_probe_config_errors_name_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        ProbeConfig(**kw)
