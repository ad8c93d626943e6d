"""The transcoder basis: latents with their TopK selection frozen, error nodes, exactness."""

from __future__ import annotations

import pytest
import torch
from graph_checks import adjacency_rows, assert_column_is_perturbation  # same folder

from workbench.graphs import GraphConfig, build_graph, freeze, run
from workbench.graphs.build import attribute
from workbench.graphs.graph import logit_nodes
from workbench.graphs.transcoders import transcoder_basis
from workbench.saes.transcoder import (
    Transcoder,
    TranscoderConfig,
    TranscoderMismatch,
    save_transcoder,
)

PROMPT = "The Eiffel Tower is in the city of"


def random_transcoder(session, layer: int, d_tc: int = 96, k: int = 8, skip: bool = True, seed: int = 0,
                      model: str | None = None) -> Transcoder:
    """A transcoder with random weights (decoder and skip included), so every term is nonzero."""
    tc = Transcoder(TranscoderConfig(d_model=session.d_model, d_tc=d_tc, k=k, layer=layer, skip=skip,
                                     model=session.name if model is None else model))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tc.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name == "W_enc" else 0.05))
        # outputs of the FFN's own size on the prompt (tiny Gemma's FFN writes norm 0.03 before
        # a post-norm of gain ~250: larger random outputs would make errors dwarf the values)
        r = run(freeze(session, PROMPT))
        pred = tc(r.ffn_in[layer])[0]
        scale = r.ffn_out[layer].norm() / pred.norm()
        for p in (tc.W_dec, tc.b_dec) + ((tc.W_skip,) if tc.W_skip is not None else ()):
            p.mul_(scale)
    return tc.eval()


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("other", ["units", "errors"])
def test_transcoder_graph_rows_are_exact(name, other, request):
    """Every latent's activation and every logit = its incoming edges (error nodes included) +
    bias, with all sources selected; the frozen forward with transcoders is the real model's."""
    s = request.getfixturevalue(name)
    prompt = "The city of"
    fz = freeze(s, prompt)
    tcs = {0: random_transcoder(s, 0, seed=1)} if other == "units" else \
        {0: random_transcoder(s, 0, seed=1), 1: random_transcoder(s, 1, skip=False, seed=2)}
    basis = transcoder_basis(fz, tcs, other)
    r = run(fz, basis=basis)
    real = s.last_logits(prompt)[0].float()
    assert (r.logits - real).abs().max() < 1e-4 * real.abs().max().clamp_min(1)
    # latent reads are the transcoder's own codes on the real FFN input (position 0: none)
    x = run(fz).ffn_in[0]
    lb = basis.layers[0]
    codes = tcs[0].encode(x)[1:, lb.index]
    assert torch.allclose(r.reads[0, 1:, :lb.n_read], codes, atol=1e-5)
    assert r.reads[0, 0, :lb.n_read].abs().max() == 0 and lb.n_read > 0
    n_all = int(basis.targets().sum()) * fz.n_pos
    cfg = GraphConfig(basis="transcoder", other_layers=other, max_nodes=n_all, faithfulness_nodes=0)
    raw = attribute(fz, logit_nodes(s, fz, None, cfg), cfg, progress=False, basis=basis)
    n_err_layers = 1 if other == "units" else 2
    assert raw.n_errors == n_err_layers * fz.n_pos
    rows = adjacency_rows(raw)
    total = raw.adjacency[rows].double().sum(1) + raw.bias[rows].double()
    values = raw.values[rows].double()
    rel = (total - values).abs() / values.abs().clamp_min(1e-2 * values.abs().max())
    assert rel.max() < 1e-4
    # every active latent was selected, so the rows' mass is all inside the graph
    assert (raw.adjacency[rows].abs().sum(1) / raw.total_abs[rows] - 1).abs().max() < 1e-4
    # error columns carry edges (the random transcoder misses most of the FFN)
    M, E = raw.n_units, raw.n_errors
    assert raw.adjacency[rows][:, M:M + E].abs().max() > 0


def test_latent_edges_equal_perturbing_that_latent(tiny):
    """Column s (a latent) of the adjacency equals the change of every target when that latent
    alone moves in the frozen transcoder model (other sources held, skip paths included)."""
    fz = freeze(tiny, PROMPT)
    tcs = {0: random_transcoder(tiny, 0, seed=3)}
    basis = transcoder_basis(fz, tcs, "units")
    cfg = GraphConfig(basis="transcoder", max_nodes=80, faithfulness_nodes=0)
    raw = attribute(fz, logit_nodes(tiny, fz, None, cfg), cfg, progress=False, basis=basis)
    lat = [j for j in range(raw.n_units) if int(raw.units[j, 0]) == 0][:3]
    assert lat, "expected layer-0 latents among the candidates"
    assert_column_is_perturbation(fz, basis, raw, lat + [raw.n_units + 3])  # three latents, one error node


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_build_graph_transcoder_basis(name, request, tmp_path):
    s = request.getfixturevalue(name)
    for layer in (0, 1):
        save_transcoder(random_transcoder(s, layer, seed=layer), tmp_path / f"layer_{layer:02d}")
    g = build_graph(s, PROMPT, basis="transcoder", transcoders=tmp_path, max_nodes=40,
                    faithfulness_nodes=4, progress=False)
    sm = g.summary
    assert g.basis == "transcoder" and sm["exactness_max_rel_error"] < 1e-4
    kinds = {n.kind for n in g.nodes}
    assert "feature" in kinds and "unit" not in kinds and sm["error_nodes"] == 2 * len(g.tokens)
    assert 0 < sm["replacement_score_unpruned"] <= 1 and sm["replacement_score"] is not None
    feats = [n for n in g.nodes if n.kind == "feature"]
    assert all(n.id == f"f{n.layer}.{n.pos}.{n.index}" and n.pos > 0 for n in feats)
    assert sm["faithfulness_nodes"] == min(4, len(feats))
    d = g.to_dict()
    assert d["basis"] == "transcoder" and any(n["kind"] == "error" for n in d["nodes"])


def test_transcoder_of_another_model_is_refused(tiny, tmp_path):
    save_transcoder(random_transcoder(tiny, 0, model="smollm2-135m"), tmp_path / "tc")
    with pytest.raises(TranscoderMismatch, match="layer 0 was trained on model 'smollm2-135m', not 'tiny-llama'"):
        build_graph(tiny, PROMPT, basis="transcoder", transcoders=tmp_path, progress=False)
    with pytest.raises(TranscoderMismatch, match="layer 1's FFN, not layer 0"):
        build_graph(tiny, PROMPT, basis="transcoder", transcoders={0: random_transcoder(tiny, 1)}, progress=False)
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="basis='transcoder' needs transcoders"):
        build_graph(tiny, PROMPT, basis="transcoder", progress=False)


@pytest.mark.real
def test_real_model_transcoder_graph_is_exact(smollm):
    """SmolLM2 with random transcoders at two layers: the frozen forward is the real model's
    and the kept rows are exact, error nodes included."""
    prompt = "The capital of France is"
    tcs = {3: random_transcoder(smollm, 3, d_tc=256, k=16, seed=4),
           20: random_transcoder(smollm, 20, d_tc=256, k=16, seed=5)}
    fz = freeze(smollm, prompt)
    real = smollm.last_logits(prompt)[0].float()
    assert (run(fz, basis=transcoder_basis(fz, tcs, "units")).logits - real).abs().max() < 1e-3
    g = build_graph(smollm, prompt, basis="transcoder", transcoders=tcs, max_nodes=24, faithfulness_nodes=0,
                    progress=False)
    assert g.summary["exactness_max_rel_error"] < 1e-4
    assert g.summary["error_nodes"] == 2 * len(g.tokens) and 0 < g.summary["completeness"] <= 1
