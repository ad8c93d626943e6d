"""Checks shared by the graph basis tests (a plain module: pytest collects nothing here)."""

from __future__ import annotations

import torch

from workbench.graphs import run


def adjacency_rows(raw) -> torch.Tensor:
    """Rows of the adjacency that are targets: the source units / latents, then the logits."""
    M, E, P = raw.n_units, raw.n_errors, raw.n_tokens
    return torch.cat([torch.arange(M), M + E + P + torch.arange(len(raw.logits))])


def assert_column_is_perturbation(fz, basis, raw, cols) -> None:
    """Each adjacency column in `cols` (a source: unit / latent index, or M + error index) equals
    the change of every target when that source alone moves in the frozen model (all other
    sources held), scaled back to the source's own activation."""
    src0 = run(fz, basis=basis).reads
    base = run(fz, sources=src0, basis=basis)
    rows, M = adjacency_rows(raw), raw.n_units
    for j in cols:
        lay, pos, col = (raw.units[j] if j < M else raw.errors[j - M]).tolist()
        src = src0.clone()
        act = float(src[lay, pos, col])
        delta = 20 * abs(act) + 1.0  # the frozen model is linear: a large move, small round-off
        src[lay, pos, col] += delta
        pert = run(fz, sources=src, basis=basis)
        d_reads = (pert.reads - base.reads)[raw.units[:, 0], raw.units[:, 1], raw.units[:, 2]]
        d_logits = (pert.logits - base.logits)[list(raw.logits.ids)]
        want = torch.cat([d_reads, d_logits])
        got = raw.adjacency[rows, j] * delta / act
        assert torch.allclose(got, want, atol=1e-6 * want.abs().max().clamp_min(1e-3), rtol=1e-3), j
        assert want.abs().max() > 0
