"""ROME's left vector u, plain and with pinned keys: constraints, least C-norm, degenerate pins."""

from __future__ import annotations

import torch

from editing import KeyStats
from editing.rome import left_vector


def _stats(d: int = 24, seed: int = 0) -> KeyStats:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(4 * d, d, generator=g, dtype=torch.float64)
    return KeyStats(0, (A.T @ A / (4 * d)).float(), 4 * d, "random", "k")


def test_plain_u_is_romes_formula():
    st = _stats()
    k = torch.randn(24, generator=torch.Generator().manual_seed(1))
    ck = torch.linalg.solve(st.moment.double(), k.double())
    want = ck / (ck @ k.double())
    assert torch.allclose(left_vector(st, k, ridge=0.0).double(), want, atol=1e-5)


def test_pinned_u_meets_every_constraint_with_least_c_norm():
    st = _stats()
    g = torch.Generator().manual_seed(2)
    k_star, k1, k2 = torch.randn(3, 24, generator=g)
    u = left_vector(st, k_star, [k1, k2], ridge=0.0).double()
    K = torch.stack([k_star, k1, k2]).double()
    assert torch.allclose(K @ u, torch.ones(3, dtype=torch.float64), atol=1e-4)
    C = st.moment.double()
    proj = torch.eye(24, dtype=torch.float64) - K.T @ torch.linalg.solve(K @ K.T, K)
    for _ in range(5):                                       # any other feasible u costs more
        z = proj @ torch.randn(24, generator=g, dtype=torch.float64)
        assert torch.allclose(K @ (u + z), torch.ones(3, dtype=torch.float64), atol=1e-4)
        assert (u + z) @ C @ (u + z) > u @ C @ u
    plain = left_vector(st, k_star, ridge=0.0).double()
    assert u @ C @ u >= plain @ C @ plain - 1e-9           # pinning never makes u cheaper


def test_pin_parallel_to_k_star_is_dropped():
    st = _stats()
    k = torch.randn(24, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(left_vector(st, k, [2.0 * k]), left_vector(st, k), atol=1e-6)
