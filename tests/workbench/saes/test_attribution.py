"""Attribution patching agrees with real patching on the top features (tiny model, ReLU SAEs)."""

from __future__ import annotations

import torch

from workbench.saes import SAEConfig, make_sae
from workbench.saes.attribution import attribution_patching, verify


def test_attribution_matches_real_patching(tiny):
    torch.manual_seed(1)
    saes = []
    for layer in (0, 1):
        s = make_sae(SAEConfig("relu", tiny.d_model, 48, site=f"resid_post:{layer}",
                               skip_first_position=False))
        with torch.no_grad():
            s.b_enc.fill_(0.05)
        saes.append(s.eval())
    clean = ["Paris is the capital of France", "Rome is the capital of Italy"]
    corrupt = ["Paris is the capital of Italy", "Rome is the capital of France"]
    for c, x in zip(clean, corrupt):
        assert len(tiny.encode(c)) == len(tiny.encode(x))
    correct, wrong = [" Paris", " Rome"], [" Rome", " Paris"]
    correct = [tiny.to_str_tokens([tiny.encode(t)[0]])[0] for t in correct]
    wrong = [tiny.to_str_tokens([tiny.encode(t)[0]])[0] for t in wrong]
    res = attribution_patching(tiny, saes, clean, correct, wrong, corrupt=corrupt, top=20)
    checked = verify(tiny, saes, res, clean, correct, wrong, corrupt=corrupt, n=5)
    real = [e.real for e in checked]
    attr = [e.attribution for e in checked]
    assert all(abs(r) > 0 for r in real)
    assert [a > 0 for a in attr] == [r > 0 for r in real]          # signs agree
    assert sorted(range(5), key=lambda i: -abs(real[i])) == list(range(5))  # same order
    # and zero-ablation mode (no corrupt run) works too
    z = attribution_patching(tiny, saes, clean, correct, wrong, top=5)
    assert len(z.top) == 5 and z.effects[0].shape == (48,)
