"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations, ReLU them, zero the rest.

    f = ReLU(TopK_k(pre))            L0 <= k by construction; no sparsity penalty.

Dead latents are revived by the auxiliary AuxK loss in `workbench.saes.train`: the residual
e = x - x^ is reconstructed from the top `aux_k` pre-activations among dead latents.
"""

from __future__ import annotations

import torch

from .._types import Float, Tensor
from .base import SAE, SAEOutput

__all__ = ["TopKSAE"]


class TopKSAE(SAE):
    architecture = "topk"

    def activation(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def forward(self, x: Float[Tensor, "... d_in"], check: bool = True) -> SAEOutput:
        """x^ = sum over the k kept latents of f_i d_i + b_dec.

        On CPU the sum is sparse (embedding_bag reads only k decoder rows per token); on CUDA a
        dense matmul of the codes with W_dec is faster than scattered row gathers.
        """
        if check:
            self.check_input(x)
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        vals = torch.relu(vals)
        codes = torch.zeros_like(pre).scatter(-1, idx, vals)
        if pre.is_cuda:
            return SAEOutput(codes @ self.W_dec + self.b_dec, codes, pre)
        flat_idx, flat_vals = idx.reshape(-1, self.cfg.k), vals.reshape(-1, self.cfg.k)
        rec = torch.nn.functional.embedding_bag(flat_idx, self.W_dec, per_sample_weights=flat_vals,
                                                mode="sum")
        recon = rec.reshape(*pre.shape[:-1], self.d_in) + self.b_dec
        return SAEOutput(recon, codes, pre)
