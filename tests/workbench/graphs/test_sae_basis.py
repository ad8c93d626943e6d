"""The sae basis (issue 19, basis c): SAE features at residual sites with their active sets
frozen, error nodes, exactness, single-feature perturbation, faithfulness, the errors."""

from __future__ import annotations

import json

import pytest
import torch
from graph_checks import adjacency_rows, assert_column_is_perturbation  # same folder

from workbench.graphs import GraphConfig, SAEBasisError, build_graph, freeze, run
from workbench.graphs.build import attribute
from workbench.graphs.faithfulness import faithfulness
from workbench.graphs.graph import logit_nodes
from workbench.graphs.sae_sites import sae_basis
from workbench.saes import SAEConfig, SAEFileError, make_sae, save_sae

PROMPT = "The Eiffel Tower is in the city of"


def resid(session, prompt: str, layer: int) -> torch.Tensor:
    """The real residual leaving block `layer` [P d_model], read by a hook (independent of the
    frozen model)."""
    got = {}

    def grab(act, hook=None):
        got["h"] = act.detach()[0].float()

    tokens = torch.tensor([session.encode(prompt)], device=session.device)
    with session.hooks([(f"blocks.{layer}.hook_resid_post", grab)]):
        session.model(tokens, return_type="logits")
    return got["h"]


def random_sae(session, layer: int, arch: str = "topk", d_sae: int = 96, k: int = 8, seed: int = 0,
               model: str | None = None, prompt: str = PROMPT, site: str | None = None, d_in: int | None = None):
    """An SAE with random weights at resid_post:layer, scaled to the prompt's residual there (so
    features and error nodes are of its size); JumpReLU thresholds at the median positive
    pre-activation (some latents with positive pre-activations stay off)."""
    cfg = SAEConfig(arch, d_in or session.d_model, d_sae, site=site or f"resid_post:{layer}", k=k,
                    model=session.name if model is None else model)
    sae = make_sae(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name != "log_threshold":
                p.copy_(torch.randn(p.shape, generator=g))
        if d_in is not None or site is not None:
            return sae.eval()
        h = resid(session, prompt, layer)
        sae.b_dec.mul_(0.1 * h.norm(dim=-1).mean() / sae.b_dec.norm())
        pre = sae.pre_acts(h)
        sae.W_enc.div_(pre.std())
        sae.b_enc.div_(pre.std())
        pre = sae.pre_acts(h)
        if arch == "jumprelu":
            sae.log_threshold.fill_(float(pre[pre > 0].median().log()))
        rec = sae.decode(sae.activation(pre)) - sae.b_dec
        sae.W_dec.mul_(h.norm() / rec.norm().clamp_min(1e-6))
    return sae.eval()


@pytest.mark.parametrize("name, other, archs", [
    ("tiny", "units", ("topk", "jumprelu")),
    ("tiny", "errors", ("relu", "topk")),
    ("tiny_gemma", "units", ("relu", "topk")),
    ("tiny_gemma", "errors", ("topk", "jumprelu")),
])
def test_sae_graph_rows_are_exact(name, other, archs, request):
    """SAEs at resid_post:0 and resid_post:1: the frozen forward with them gives the real
    logits, each feature reads the SAE's own code on the real residual, and every feature's
    activation and every logit = its incoming edges (error nodes included) + bias."""
    s = request.getfixturevalue(name)
    prompt = "The city of"
    saes = {0: random_sae(s, 0, archs[0], seed=1, prompt=prompt), 1: random_sae(s, 1, archs[1], seed=2, prompt=prompt)}
    fz = freeze(s, prompt)
    basis = sae_basis(fz, saes, other)
    assert [lb.site for lb in basis.layers] == ["mlp", "resid_post", "mlp", "resid_post"]
    r = run(fz, basis=basis)
    real = s.last_logits(prompt)[0].float()
    assert (r.logits - real).abs().max() < 1e-4 * real.abs().max().clamp_min(1)
    for layer, row in basis.site_rows.items():
        lb, sae = basis.layers[row], saes[layer]
        codes = sae.encode(resid(s, prompt, layer))
        assert lb.n_read > 0 and int((codes[1:] != 0).sum()) > 0
        # position 0 (skip_first_position, the SAE default): no features, its error node is all
        assert r.reads[row, 0, :lb.n_read].abs().max() == 0
        scale = codes.abs().max()
        assert (r.reads[row, 1:, :lb.n_read] - codes[1:, lb.index]).abs().max() < 1e-4 * scale
        assert int((r.reads[row, 1:, :lb.n_read] != 0).sum()) == int((codes[1:] != 0).sum())
    n_all = int(basis.targets().sum()) * fz.n_pos
    cfg = GraphConfig(basis="sae", other_layers=other, max_nodes=n_all, faithfulness_nodes=0)
    raw = attribute(fz, logit_nodes(s, fz, None, cfg), cfg, progress=False, basis=basis)
    n_err_rows = 2 if other == "units" else 4
    assert raw.n_errors == n_err_rows * fz.n_pos
    rows = adjacency_rows(raw)
    total = raw.adjacency[rows].double().sum(1) + raw.bias[rows].double()
    values = raw.values[rows].double()
    rel = (total - values).abs() / values.abs().clamp_min(1e-2 * values.abs().max())
    assert rel.max() < 1e-4
    # every active feature was selected, so the rows' mass is all inside the graph
    assert (raw.adjacency[rows].abs().sum(1) / raw.total_abs[rows] - 1).abs().max() < 1e-4
    M, E, P = raw.n_units, raw.n_errors, raw.n_tokens
    # the logits read only what the last site writes: its features, its error nodes, b_dec
    site1 = basis.site_rows[1]
    last = raw.adjacency[M + E + P:]
    from_elsewhere = [j for j in range(M) if int(raw.units[j, 0]) != site1]
    assert last[:, from_elsewhere].abs().max() == 0 and last[:, M + E:M + E + P].abs().max() == 0
    assert raw.adjacency[rows][:, M:M + E].abs().max() > 0


def test_feature_edges_equal_perturbing_that_feature(tiny):
    """Column s (a feature) of the adjacency equals the change of every target when that
    feature alone moves in the frozen SAE model (other sources held)."""
    saes = {0: random_sae(tiny, 0, "topk", seed=3), 1: random_sae(tiny, 1, "jumprelu", seed=4)}
    fz = freeze(tiny, PROMPT)
    basis = sae_basis(fz, saes, "units")
    cfg = GraphConfig(basis="sae", max_nodes=120, faithfulness_nodes=0)
    raw = attribute(fz, logit_nodes(tiny, fz, None, cfg), cfg, progress=False, basis=basis)
    M = raw.n_units
    picks = []
    for row in basis.site_rows.values():
        picks += [j for j in range(M) if int(raw.units[j, 0]) == row][:2]
    assert len(picks) == 4, "expected features of both sites among the candidates"
    err0 = [M + i for i in range(raw.n_errors) if int(raw.errors[i, 0]) == basis.site_rows[0]][3]
    assert_column_is_perturbation(fz, basis, raw, picks + [err0])  # two features per site, one error node


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_build_graph_sae_basis_from_a_folder(name, request, tmp_path):
    """Saved SAEs (one sub-folder each, `workbench sae train`'s OUT/final for one of them):
    exact graph, feature / site-error ids, faithfulness over features, JSON."""
    s = request.getfixturevalue(name)
    save_sae(random_sae(s, 0, "topk", seed=5), tmp_path / "a" / "final")
    save_sae(random_sae(s, 1, "relu", seed=6), tmp_path / "b")
    g = build_graph(s, PROMPT, basis="sae", saes=tmp_path, max_nodes=40, faithfulness_nodes=4, progress=False)
    sm = g.summary
    assert g.basis == "sae" and sm["exactness_max_rel_error"] < 1e-4
    assert sm["error_nodes"] == 2 * len(g.tokens) and 0 <= sm["replacement_score_unpruned"] <= 1
    assert 0 < sm["completeness"] <= 1 and sm["replacement_score"] is not None
    feats = [n for n in g.nodes if n.kind == "feature"]
    assert feats and all(n.id == f"f{n.layer}.{n.pos}.{n.index}" and n.pos > 0 for n in feats)
    assert all(n.label.startswith(f"resid_post:{n.layer} F{n.index} @ ") for n in feats)
    errs = [n for n in g.nodes if n.kind == "error"]
    assert all(n.id == f"r{n.layer}.{n.pos}" and "resid_post" in n.label for n in errs)
    assert sm["faithfulness_nodes"] == min(4, len(feats))
    d = g.to_dict()
    assert d["basis"] == "sae" and d["settings"]["basis"] == "sae"
    ids = [n.id for n in g.nodes]
    assert len(ids) == len(set(ids))


def test_other_layers_errors_ids_do_not_collide(tiny):
    """FFN error nodes keep e{layer}.{pos}, residual-site error nodes are r{layer}.{pos}."""
    saes = [random_sae(tiny, 0, "topk", seed=7)]
    g = build_graph(tiny, PROMPT, basis="sae", saes=saes, other_layers="errors", max_nodes=30, keep=1.0,
                    edge_keep=1.0, faithfulness_nodes=0, progress=False)
    assert g.summary["error_nodes"] == 3 * len(g.tokens) and g.summary["exactness_max_rel_error"] < 1e-4
    ids = {n.id for n in g.nodes if n.kind == "error"}
    assert any(i.startswith("e") for i in ids) and any(i.startswith("r") for i in ids)
    assert not any(n.kind == "unit" for n in g.nodes)


def test_faithfulness_ablation_equals_an_independent_hook(tiny):
    """The measured change of ablating a feature = taking a_j W_dec[j] out of the real residual
    at its site and position by a hand-written hook (attention, norms, gates free)."""
    saes = {1: random_sae(tiny, 1, "topk", seed=8)}
    g = build_graph(tiny, PROMPT, basis="sae", saes=saes, max_nodes=30, faithfulness_nodes=0, progress=False)
    f = faithfulness(tiny, g, 3, saes=saes, progress=False)
    assert len(f.node_ids) >= 2
    li = [i for i, n in enumerate(g.nodes) if n.kind == "logit"]
    tid = g.nodes[li[max(range(len(li)), key=lambda j: g.logit_weights[j])]].index
    tokens = torch.tensor([list(g.token_ids)])
    base = tiny.model(tokens, return_type="logits")[0, -1, tid].float()
    codes = saes[1].encode(resid(tiny, PROMPT, 1)).detach()
    for nid, meas in zip(f.node_ids, f.measured.tolist()):
        nd = g.nodes[g.node_index(nid)]
        a = float(codes[nd.pos, nd.index])
        assert abs(a - nd.activation) < 1e-4 * max(1.0, abs(a))

        def hook(act, hook=None, nd=nd, a=a):
            out = act.clone()
            out[:, nd.pos] -= a * saes[1].W_dec[nd.index].detach().to(act.dtype)
            return out

        with tiny.hooks([("blocks.1.hook_resid_post", hook)]):
            want = float(tiny.model(tokens, return_type="logits")[0, -1, tid].float() - base)
        assert abs(meas - want) < 1e-5 * max(1.0, abs(want))
    # the graph's prediction is (factor - 1) x its path sum: nonzero for features with paths
    assert f.predicted.abs().max() > 0


def test_saelens_folder_with_b_dec_not_applied(tiny, tmp_path):
    """A SAELens folder (apply_b_dec_to_input=false, JumpReLU 'threshold'): the features read
    SAELens's codes x W_enc + b_enc on the frozen active set, and the graph stays exact."""
    from safetensors.torch import save_file

    ref = random_sae(tiny, 1, "jumprelu", seed=9)
    h = resid(tiny, PROMPT, 1)
    d = tmp_path / "sl"
    d.mkdir()
    W_enc, b_enc, W_dec = ref.W_enc.detach(), ref.b_enc.detach(), ref.W_dec.detach()
    b_dec, theta = ref.b_dec.detach(), ref.threshold.detach()
    save_file({"W_enc": W_enc.contiguous(), "b_enc": b_enc, "W_dec": W_dec.contiguous(), "b_dec": b_dec,
               "threshold": theta}, str(d / "sae_weights.safetensors"))
    (d / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": tiny.d_model, "d_sae": 96,
                                            "hook_name": "blocks.1.hook_resid_post", "apply_b_dec_to_input": False,
                                            "model_name": tiny.name}))
    pre = h @ W_enc + b_enc                       # SAELens: no b_dec subtracted from the input
    want = pre * (pre > theta)
    g = build_graph(tiny, PROMPT, basis="sae", saes=d, max_nodes=200, keep=1.0, edge_keep=1.0,
                    faithfulness_nodes=0, progress=False)
    assert g.summary["exactness_max_rel_error"] < 1e-4
    feats = [n for n in g.nodes if n.kind == "feature"]
    assert feats and all(n.pos >= 0 for n in feats)
    for n in feats:
        assert abs(n.activation - float(want[n.pos, n.index])) < 1e-4 * float(want.abs().max())
    # SAELens folders carry no skip_first_position: position 0 gets features too
    fz = freeze(tiny, PROMPT)
    from workbench.graphs.sae_sites import load_saes

    basis = sae_basis(fz, load_saes(d, tiny), "units")
    assert bool(basis.layers[basis.site_rows[1]].gate[0].any()) == bool((want[0] != 0).any())


def test_errors_leave_the_session_untouched(tiny, tmp_path):
    before = tiny.last_logits(PROMPT)
    good = random_sae(tiny, 0, "topk", seed=10)
    cases = [
        ([random_sae(tiny, 0, d_in=32, seed=1)], "SAE at site resid_post:0 .* reads d_in=32; the residual of "
                                                 "model 'tiny-llama' has d_model=64"),
        ([random_sae(tiny, 0, site="mlp_out:0", seed=1)], r"SAE at site mlp_out:0 .* is not supported by the sae "
                                                          r"basis; supported sites: resid_post:L \(L in 0..1\)"),
        ([good, random_sae(tiny, 0, "relu", seed=2)], "two SAEs are given for site resid_post:0"),
        ([random_sae(tiny, 0, model="smollm2-135m", seed=1)], "was trained on model 'smollm2-135m', not 'tiny-llama'"),
        ([random_sae(tiny, 0, site="resid_post:5", seed=1)], "layer 5 is out of range"),
        ({1: good}, r"saes\[1\] is an SAE of site resid_post:0, not of resid_post:1"),
        ([], "saes is empty"),
        (None, "basis='sae' needs SAEs"),
        (str(tmp_path / "missing"), "does not exist"),
    ]
    for saes, needle in cases:
        with pytest.raises(SAEFileError if isinstance(saes, str) else SAEBasisError, match=needle):
            build_graph(tiny, PROMPT, basis="sae", saes=saes, max_nodes=8, faithfulness_nodes=0, progress=False)
    from workbench.graphs import GraphConfigError

    with pytest.raises(GraphConfigError, match="saes were given but basis='units'; use basis='sae'"):
        build_graph(tiny, PROMPT, saes=[good], progress=False)
    save_sae(good, tmp_path / "one")
    save_sae(random_sae(tiny, 0, "relu", seed=3), tmp_path / "two")
    with pytest.raises(SAEBasisError, match="two SAEs are given for site resid_post:0"):
        build_graph(tiny, PROMPT, basis="sae", saes=tmp_path, progress=False)
    assert torch.equal(tiny.last_logits(PROMPT), before)
    assert all(not hp._forward_hooks for hp in tiny.model.hook_dict.values())


@pytest.mark.real
def test_real_model_sae_graph_is_exact(smollm):
    """SmolLM2 with one random SAE at resid_post:5: the frozen forward is the real model's and
    the kept rows are exact, error nodes included."""
    prompt = "The capital of France is"
    saes = {5: random_sae(smollm, 5, "topk", d_sae=512, k=16, seed=11, prompt=prompt)}
    fz = freeze(smollm, prompt)
    real = smollm.last_logits(prompt)[0].float()
    assert (run(fz, basis=sae_basis(fz, saes, "units")).logits - real).abs().max() < 1e-3
    g = build_graph(smollm, prompt, basis="sae", saes=saes, max_nodes=24, faithfulness_nodes=3, progress=False)
    sm = g.summary
    assert sm["exactness_max_rel_error"] < 1e-4 and sm["error_nodes"] == len(g.tokens)
    assert 0 < sm["completeness"] <= 1 and sm["replacement_score_unpruned"] is not None


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_total_resid_gradients_match_the_ffn_ones(name, request):
    """The frozen all-path gradient on the residual leaving block l (faithfulness's frozen
    prediction for a feature) is the FFN output's gradient before the post-FFN norm: equal on
    Llama, divided by that norm's frozen factor on Gemma."""
    from workbench.graphs.edges import total_ffn_gradients, total_resid_gradients

    s = request.getfixturevalue(name)
    fz = freeze(s, PROMPT)
    d = fz.weights.W_U[7]
    g_r, g_f = total_resid_gradients(fz, d), total_ffn_gradients(fz, d)
    for layer, lw in enumerate(fz.weights.layers):
        want = g_r[layer] if lw.post_ffn is None else g_r[layer] * fz.r_post_ffn[layer][:, None] * lw.post_ffn.w
        assert torch.allclose(want, g_f[layer], atol=1e-6 * g_f.abs().max())
    assert g_r[-1, -1].abs().max() > 0 and g_r[:, 0].abs().max() > 0
