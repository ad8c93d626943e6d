"""Helpers for the SAE tests: known-weights SAEs on the tiny model."""

from __future__ import annotations

import pytest
import torch

from workbench.saes import SAEConfig, make_sae


def identity_sae(d_in: int, site: str = "", skip_first: bool = False, arch: str = "relu"):
    """x -> [ReLU(x), ReLU(-x)] -> ReLU(x) - ReLU(-x) = x exactly (d_sae = 2 d_in)."""
    sae = make_sae(SAEConfig(arch, d_in, 2 * d_in, site=site, k=2 * d_in,
                             skip_first_position=skip_first))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture
def make_identity():
    return identity_sae
