"""Fast capture paths (workbench.fastpath) against the generic bridge capture.

CPU tests run the pure-HF eager path and the chunking logic on the tiny models; the CUDA-graph
and torch.compile paths are checked only where CUDA is present.
"""

from __future__ import annotations

import pytest
import torch

from workbench import capture, intervene, sites, zero_neurons
from workbench.errors import WorkbenchError
from workbench.fastpath import (
    FAST_KINDS,
    CompiledCapture,
    GraphCapture,
    MemoryBudgetError,
    estimate_row_bytes,
    plan_chunks,
)
from workbench.hooks import Site
from workbench.session import TokenBatch

PROMPTS = ["The quick brown fox jumps over", "Paris is the capital of France. Rome is", "Hi"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def all_fast_sites(s):
    return [Site(k, layer) for k in sorted(FAST_KINDS) for layer in range(s.n_layers)]


def assert_same(a, b, sites_, atol=1e-5):
    for x in sites_:
        assert a[x].shape == b[x].shape, x
        assert torch.allclose(a[x].float(), b[x].float(), atol=atol, rtol=1e-4), (
            x, (a[x].float() - b[x].float()).abs().max().item())


@pytest.mark.parametrize("arch", ["tiny", "tiny_gemma"])
def test_fast_equals_generic_every_fast_site(arch, request):
    s = request.getfixturevalue(arch)
    ss = all_fast_sites(s)
    gc = GraphCapture(s, ss)
    assert gc.fast
    ref, cap = capture(s, PROMPTS, ss, backend="generic"), gc(PROMPTS)
    assert_same(cap, ref, ss)  # padding positions too: same pad tokens, causal attention
    assert cap.batch.tokens.equal(ref.batch.tokens)


def test_fast_path_leaves_the_session_untouched(tiny):
    before = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in tiny.model.named_modules()}
    impl = tiny.hf_model.config._attn_implementation
    GraphCapture(tiny, ["mlp_post:1", "resid_post:0"])(PROMPTS)
    after = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in tiny.model.named_modules()}
    assert before == after and tiny.hf_model.config._attn_implementation == impl


def test_unsupported_site_uses_generic(tiny):
    ss = ["attn_pattern:1", "mlp_post:0"]
    gc = GraphCapture(tiny, ss)
    assert not gc.fast
    assert_same(gc(PROMPTS), capture(tiny, PROMPTS, ss, backend="generic"), [Site("attn_pattern", 1), Site("mlp_post", 0)])


def test_active_intervention_is_respected(tiny):
    ss = ["mlp_out:1"]
    gc = GraphCapture(tiny, ss)
    plain = gc(PROMPTS)
    with intervene(tiny, zero_neurons(1, list(range(0, 256, 2)))):
        edited = gc(PROMPTS)
        ref = capture(tiny, PROMPTS, ss, backend="generic")
    assert_same(edited, ref, ss)
    assert not torch.allclose(edited["mlp_out:1"], plain["mlp_out:1"])


def test_in_place_weight_edit_is_seen(tiny):
    gc = GraphCapture(tiny, ["mlp_out:0"])
    w = tiny.hf_model.model.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(2.0)
        doubled = gc(PROMPTS)["mlp_out:0"]
        ref = capture(tiny, PROMPTS, ["mlp_out:0"], backend="generic")["mlp_out:0"]
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.allclose(doubled, ref, atol=1e-5)
    assert torch.allclose(doubled, 2 * gc(PROMPTS)["mlp_out:0"], atol=1e-5)


def test_capture_backend_opt_in(tiny):
    ss = ["mlp_post:0", "resid_mid:1"]
    ref = capture(tiny, PROMPTS, ss, backend="generic")
    for backend in ("graph", "compiled"):
        assert_same(capture(tiny, PROMPTS, ss, backend=backend), ref, [Site("mlp_post", 0), Site("resid_mid", 1)])
    with pytest.raises(WorkbenchError, match="backend='turbo'"):
        capture(tiny, PROMPTS, ss, backend="turbo")


def test_plan_chunks_splits_within_budget():
    plan = plan_chunks(10, row_bytes=100, budget_bytes=350)
    assert [j - i for i, j in plan] == [3, 3, 3, 1] or max(j - i for i, j in plan) <= 3
    assert plan[0][0] == 0 and plan[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:], strict=False))
    assert plan_chunks(4, 100, 10_000) == [(0, 4)]
    with pytest.raises(MemoryBudgetError, match="one row needs"):
        plan_chunks(4, row_bytes=1000, budget_bytes=999)


def test_estimate_counts_the_captured_bytes(tiny):
    ss = [Site("mlp_post", 0), Site("resid_post", 1), Site("attn_z", 0), Site("attn_pattern", 1)]
    cap = capture(tiny, PROMPTS, ss)
    seq = cap.batch.tokens.shape[1]
    out, work = estimate_row_bytes(tiny, ss, seq)
    assert out == sum(cap[x][0].numel() * cap[x].element_size() for x in ss)
    assert work > 0


def test_compiled_capture_chunks_under_a_small_budget(tiny):
    ss = all_fast_sites(tiny)
    batch = tiny.tokenize(PROMPTS * 3)
    seq = batch.tokens.shape[1]
    out, work = estimate_row_bytes(tiny, ss, seq)
    cc = CompiledCapture(tiny, ss, compile=False, budget_bytes=3 * (out + work))
    cap = cc(batch)
    assert len(cc.last_plan) > 1 and cc.last_plan[-1][1] == len(batch)
    assert_same(cap, capture(tiny, batch, ss, backend="generic"), ss)
    streamed = list(cc.chunks(batch))
    assert sum(len(c.batch) for c in streamed) == len(batch)
    with pytest.raises(MemoryBudgetError):
        CompiledCapture(tiny, ss, compile=False, budget_bytes=out)(batch)


def test_out_of_memory_halves_the_chunk(tiny, monkeypatch):
    ss = ["mlp_post:1"]
    cc = CompiledCapture(tiny, ss, compile=False, budget_bytes=1 << 30)
    run = cc._run
    seen, done = [], []

    def flaky(tokens):
        seen.append(tokens.shape[0])
        if tokens.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        done.append(tokens.shape[0])
        return run(tokens)

    monkeypatch.setattr(cc, "_run", flaky)
    batch = tiny.tokenize(PROMPTS * 2)
    cap = cc(batch)
    assert seen[:2] == [6, 3] and sum(done) == 6 and max(done) <= 2  # 6 -> 3 + 3 -> (1 + 2) * 2
    assert_same(cap, capture(tiny, batch, ss, backend="generic"), [Site("mlp_post", 1)])


def test_bad_arguments(tiny):
    with pytest.raises(WorkbenchError):
        GraphCapture(tiny, [])
    with pytest.raises(WorkbenchError):
        GraphCapture(tiny, ["mlp_post:0"], buckets=(0,))
    with pytest.raises(WorkbenchError):
        CompiledCapture(tiny, ["mlp_post:0"], memory_fraction=0)


# ---------------------------------------------------------------- CUDA only
@cuda
def test_graph_replay_equals_generic_on_cuda(tok_dir):
    from workbench.testing import tiny_session

    s = tiny_session("llama", tokenizer_dir=tok_dir, device="cuda")
    ss = all_fast_sites(s)
    gc = GraphCapture(s, ss, buckets=(8, 16, 64), batch=2)
    medium = ["word " * 10]
    assert [len(s.encode(p)) for p in (*PROMPTS, *medium)] == [6, 11, 2, 50]
    for prompts in (PROMPTS, PROMPTS[:1], medium):  # 3 rows in 2 replays; three buckets
        assert_same(gc(prompts), capture(s, prompts, ss, backend="generic"), ss, atol=1e-4)
    assert set(gc._graphs) == {8, 16, 64}
    long = ["word " * 30]  # 150 tokens, beyond the largest bucket: eager pure trunk
    assert_same(gc(long), capture(s, long, ss, backend="generic"), ss, atol=1e-4)


@cuda
def test_compiled_capture_on_cuda(tok_dir):
    from workbench.testing import tiny_session

    s = tiny_session("llama", tokenizer_dir=tok_dir, device="cuda")
    ss = sites("mlp_post", session=s)
    batch = s.tokenize(PROMPTS)
    assert_same(CompiledCapture(s, ss)(batch), capture(s, batch, ss, backend="generic"), ss, atol=1e-4)


@cuda
def test_default_capture_on_cuda_equals_generic(tok_dir):
    from workbench.testing import tiny_session

    s = tiny_session("gemma", tokenizer_dir=tok_dir, device="cuda")
    ss = all_fast_sites(s)
    small, large = PROMPTS, ["word " * 200] * 24          # 24 rows x ~1000 tokens >= COMPILE_MIN_TOKENS
    ref = capture(s, small, ss, backend="generic")
    got = capture(s, small, ss)
    assert got.path == "graph"
    assert_same(got, ref, ss, atol=1e-4)
    ref = capture(s, large, ss, backend="generic")
    from workbench.fastpath import COMPILE_AFTER_USES

    paths = []
    for _ in range(COMPILE_AFTER_USES):
        got = capture(s, large, ss)
        paths.append(got.path)
    assert_same(got, ref, ss, atol=1e-4)
    assert paths == ["eager"] * (COMPILE_AFTER_USES - 1) + ["compiled"]
    s.close()


@pytest.mark.parametrize("arch", ["tiny", "tiny_gemma"])
def test_causal_trunk_equals_generic_past_the_sliding_window(arch, request):
    """The trunk drops the causal mask of full-attention layers (flash SDPA) and keeps the
    sliding-window layers' mask: 48 tokens reach past tiny_gemma's window of 32."""
    s = request.getfixturevalue(arch)
    ids = torch.randint(5, s.d_vocab, (2, 48), generator=torch.Generator().manual_seed(0))
    batch = TokenBatch(ids, torch.tensor([48, 48]))
    ss = [Site("resid_post", layer) for layer in range(s.n_layers)]
    ref = capture(s, batch, ss, backend="generic")
    assert_same(CompiledCapture(s, ss, compile=False)(batch), ref, ss)
    window = getattr(s.hf_model.config, "sliding_window", None)
    assert arch == "tiny" or 0 < window < ids.shape[1]  # the sliding layers' mask is exercised


def test_sites_on_one_tensor_are_independent(tiny):
    """resid_post of layer 0 is resid_pre of layer 1 (one tensor in the trunk): the capture
    hands out separate storage, so writing into one leaves the other as captured."""
    ss = [Site("resid_post", 0), Site("resid_pre", 1)]
    cap = CompiledCapture(tiny, ss, compile=False)(PROMPTS[:1])
    a, b = cap[ss[0]], cap[ss[1]]
    assert torch.equal(a, b)
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    a.zero_()
    assert b.abs().sum() > 0
