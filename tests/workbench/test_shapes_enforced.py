"""Under `make test` the library's signatures are enforced at run time (jaxtyping + beartype)."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("WORKBENCH_TYPECHECK") != "1",
                                reason="shape checks are on only with WORKBENCH_TYPECHECK=1 (make test)")


def test_a_wrong_shape_fails_at_the_call(tiny):
    from jaxtyping import TypeCheckError

    from workbench.ffn import ffn_weights, sub_updates

    w = ffn_weights(tiny, 0)
    ok = sub_updates(torch.ones(tiny.d_mlp), w)                 # Float[Tensor, " d_mlp"]
    assert ok.shape == (tiny.d_mlp, tiny.d_model)
    with pytest.raises(TypeCheckError):
        sub_updates(torch.ones(tiny.d_mlp, 2), w)               # a matrix where a vector is declared


def test_a_wrong_type_fails_at_the_call(tiny):
    from jaxtyping import TypeCheckError

    from workbench.vocab import top_tokens

    with pytest.raises(TypeCheckError):
        top_tokens(tiny, torch.zeros(tiny.d_vocab), k="3")       # k: int
