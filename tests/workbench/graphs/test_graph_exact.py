"""The frozen local linear model and its edges: exact identities, checked independently."""

from __future__ import annotations

import pytest
import torch

from workbench.graphs import GraphConfig, build_graph, freeze, run
from workbench.graphs.build import attribute
from workbench.graphs.graph import logit_nodes

PROMPT = "The Eiffel Tower is in the city of"


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_frozen_forward_reproduces_real_model(name, request):
    s = request.getfixturevalue(name)
    fz = freeze(s, PROMPT)
    r = run(fz)
    real = s.last_logits(PROMPT)[0].float()
    assert (r.logits - real).abs().max() < 1e-5 * real.abs().max().clamp_min(1)
    assert torch.allclose(r.reads, fz.coeffs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_every_row_is_the_sum_of_its_edges(name, request):
    """With every unit selected, each unit's read and each logit equals its row sum + bias."""
    s = request.getfixturevalue(name)
    prompt = "The city of"
    fz = freeze(s, prompt)
    n_units = fz.n_layers * fz.n_pos * fz.weights.d_mlp
    cfg = GraphConfig(max_nodes=n_units, faithfulness_nodes=0, skip_first_position=False)
    raw = attribute(fz, logit_nodes(s, fz, None, cfg), cfg, progress=False)
    M, P = raw.n_units, raw.n_tokens
    rows = torch.cat([torch.arange(M), M + P + torch.arange(len(raw.logits))])
    total = raw.adjacency[rows].double().sum(1) + raw.bias[rows].double()
    values = raw.values[rows].double()
    # values are recomputed independently by the frozen forward; relative error per row,
    # against the row's own scale for near-zero units
    rel = (total - values).abs() / values.abs().clamp_min(1e-2 * values.abs().max())
    assert rel.max() < 1e-4
    assert (raw.adjacency[rows].abs().sum(1) / raw.total_abs[rows] - 1).abs().max() < 1e-4
    # the logits are the real model's
    frozen_logits = raw.values[M + P:]
    real = s.last_logits(prompt)[0, list(raw.logits.ids)].float()
    assert torch.allclose(frozen_logits, real, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_first_position_units_are_not_candidates_but_still_counted(name, request):
    """skip_first_position: no source at position 0 (the attention sink); its units' share of each
    row stays in the row's total, so the kept edges fall short of it by exactly that share."""
    s = request.getfixturevalue(name)
    fz = freeze(s, "The city of")
    n_units = fz.n_layers * fz.n_pos * fz.weights.d_mlp
    cfg = GraphConfig(max_nodes=n_units, faithfulness_nodes=0, skip_first_position=True)
    raw = attribute(fz, logit_nodes(s, fz, None, cfg), cfg, progress=False)
    assert 0 < raw.n_units <= n_units - fz.n_layers * fz.weights.d_mlp
    assert bool((raw.units[:, 1] > 0).all())
    full = attribute(fz, logit_nodes(s, fz, None, cfg), GraphConfig(max_nodes=n_units, faithfulness_nodes=0,
                                                                     skip_first_position=False), progress=False)
    M, P = raw.n_units, raw.n_tokens
    Mf = full.n_units
    at0 = (full.units[:, 1] == 0).nonzero().flatten()
    want = full.adjacency[Mf + P:, :Mf][:, at0].abs().sum(1)         # logit rows' mass at position 0
    got = raw.total_abs[M + P:] - raw.adjacency[M + P:].abs().sum(1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(raw.total_abs[M + P:].max()))


def test_vjp_edges_equal_perturbing_one_unit(tiny):
    """Column s of the adjacency equals the change of every target when unit s alone moves."""
    fz = freeze(tiny, PROMPT)
    cfg = GraphConfig(max_nodes=60, faithfulness_nodes=0)
    raw = attribute(fz, logit_nodes(tiny, fz, None, cfg), cfg, progress=False)
    M, P = raw.n_units, raw.n_tokens
    base = run(fz, sources=fz.coeffs)
    low = [j for j in range(M) if int(raw.units[j, 0]) == 0][:3]
    assert low, "expected layer-0 units among the candidates"
    for j in low:
        lay, pos, idx = raw.units[j].tolist()
        src = fz.coeffs.clone()
        delta = 0.5 * float(src[lay, pos, idx]) + 0.1
        src[lay, pos, idx] += delta
        pert = run(fz, sources=src)
        d_reads = (pert.reads - base.reads)[raw.units[:, 0], raw.units[:, 1], raw.units[:, 2]]
        d_logits = (pert.logits - base.logits)[list(raw.logits.ids)]
        want = torch.cat([d_reads, d_logits])
        got = raw.adjacency[torch.cat([torch.arange(M), M + P + torch.arange(len(raw.logits))]), j]
        got = got * delta / raw.unit_act[j]
        assert torch.allclose(got, want, atol=1e-6 * want.abs().max().clamp_min(1e-3), rtol=1e-3)
        assert want.abs().max() > 0


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_real_model_graph_is_exact(name, request):
    s = request.getfixturevalue(name)
    fz = freeze(s, "The capital of France is")
    real = s.last_logits("The capital of France is")[0].float()
    assert (run(fz).logits - real).abs().max() < 1e-3
    g = build_graph(s, "The capital of France is", max_nodes=24, faithfulness_nodes=0, progress=False)
    assert g.summary["exactness_max_rel_error"] < 1e-4
    assert g.summary["nodes"] == len(g.nodes) > 0
    assert 0 < g.summary["completeness"] <= 1


def test_biases_are_the_constant_term(tok_dir):
    """A Llama with attention and MLP biases: row sums + the carried bias still equal the value."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench import Session
    from workbench.testing import tiny_tokenizer

    tok = tiny_tokenizer(tok_dir)
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    hf.config.architectures = ["LlamaForCausalLM"]
    s = Session.from_hf(hf, tok, device="cpu")
    fz = freeze(s, "The city of")
    assert (run(fz).logits - s.last_logits("The city of")[0]).abs().max() < 1e-5
    n_units = fz.n_layers * fz.n_pos * fz.weights.d_mlp
    cfg_g = GraphConfig(max_nodes=n_units, faithfulness_nodes=0, skip_first_position=False)
    raw = attribute(fz, logit_nodes(s, fz, None, cfg_g), cfg_g, progress=False)
    M, P = raw.n_units, raw.n_tokens
    rows = torch.cat([torch.arange(M), M + P + torch.arange(len(raw.logits))])
    assert raw.bias[rows].abs().max() > 1e-3
    total = raw.adjacency[rows].double().sum(1) + raw.bias[rows].double()
    values = raw.values[rows].double()
    assert ((total - values).abs() / values.abs().clamp_min(1e-2 * values.abs().max())).max() < 1e-4
