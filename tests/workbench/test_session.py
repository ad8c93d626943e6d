"""Session: loading, tokens, BOS policy, errors, parity with the Hugging Face model."""

from __future__ import annotations

import pytest
import torch

import workbench as wb


def test_tiny_session_shapes(tiny):
    assert (tiny.n_layers, tiny.d_model, tiny.d_mlp, tiny.n_heads) == (2, 64, 256, 4)
    logits = tiny.logits(["Paris is", "The quick brown fox"])
    assert logits.shape == (2, tiny.tokenize(["The quick brown fox"]).tokens.shape[1], tiny.d_vocab)


def test_tokenize_right_pads_and_masks(tiny):
    b = tiny.tokenize(["The quick brown fox jumps", "Rome"])
    assert b.tokens.shape[0] == 2
    assert b.lengths.tolist() == [len(tiny.encode("The quick brown fox jumps")), len(tiny.encode("Rome"))]
    assert b.mask.sum().item() == int(b.lengths.sum())
    assert (b.tokens[1, b.lengths[1]:] == tiny.pad_id).all()
    assert "".join(b.str_tokens[0]) == "The quick brown fox jumps"


def test_bos_policy(tiny, tiny_gemma):
    assert tiny.encode("Rome")[0] != tiny.tokenizer.bos_token_id
    assert tiny_gemma.encode("Rome")[0] == tiny_gemma.tokenizer.bos_token_id


@pytest.mark.parametrize("bad", ["", []])
def test_empty_prompt_errors(tiny, bad):
    with pytest.raises(wb.EmptyPromptError, match="empty"):
        tiny.tokenize(bad)


def test_token_id_checks_single_token(tiny):
    assert tiny.token_id(" the") == tiny.tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(wb.TokenError, match="exactly one token"):
        tiny.token_id("The Eiffel Tower")
    with pytest.raises(wb.TokenError, match="empty"):
        tiny.token_id("")


def test_unknown_model_and_dtype():
    with pytest.raises(wb.UnknownModelError, match="not-a-model"):
        wb.Session.load("not-a-model")
    with pytest.raises(wb.UnknownModelError, match="dtype"):
        wb.Session.load("smollm2-135m", dtype="float8")


def test_check_layer_neuron_head_messages(tiny):
    with pytest.raises(wb.LayerOutOfRange, match=r"layer=5 .*0\.\.1"):
        tiny.check_layer(5)
    with pytest.raises(wb.NeuronOutOfRange, match=r"0\.\.255"):
        tiny.check_neuron(0, 256)
    with pytest.raises(wb.HeadOutOfRange, match=r"0\.\.3"):
        tiny.check_head(1, -1)
    assert tiny.check_neuron(1, 255) == 255


def test_unembed_of_last_residual_equals_logits(tiny, tiny_gemma):
    for s in (tiny, tiny_gemma):
        cap = wb.capture(s, "Paris is the capital of", [f"resid_post:{s.n_layers - 1}"], logits=True)
        torch.testing.assert_close(s.unembed(cap[f"resid_post:{s.n_layers - 1}"]), cap.logits)


def _hf_logits(session, prompt):
    ids = torch.tensor([session.encode(prompt)])
    with torch.no_grad():
        return session.hf_model(ids).logits


@pytest.mark.real
def test_smollm_parity_and_paris(smollm):
    prompt = "The Eiffel Tower is located in the city of"
    ours = smollm.logits(prompt)
    ref = _hf_logits(smollm, prompt)
    assert (ours - ref).abs().max().item() < 1e-4
    assert smollm.next_token(prompt) == " Paris"
    assert smollm.tokenize(prompt).tokens[0, 0].item() != smollm.tokenizer.bos_token_id


@pytest.mark.real
@pytest.mark.gemma
def test_gemma_parity(gemma):
    prompt = "The Eiffel Tower is located in the city of"
    assert gemma.tokenize(prompt).tokens[0, 0].item() == gemma.tokenizer.bos_token_id
    assert (gemma.logits(prompt) - _hf_logits(gemma, prompt)).abs().max().item() < 1e-4


@pytest.mark.real
def test_cached_directory_is_safetensors(smollm):
    from workbench.models import cached_model_dir

    d = cached_model_dir("smollm2-135m")
    assert list(d.glob("*.safetensors")) and not list(d.glob("*.bin"))
    assert (d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()


# ---------------------------------------------------------------- loading defaults (issue 14)
@pytest.mark.parametrize(("arch", "tok_bos", "saved", "bos"), [
    ("llama", False, torch.float32, False),    # SmolLM2-style: the tokenizer adds no BOS
    ("llama", True, torch.bfloat16, True),     # Llama-3-style: the tokenizer puts BOS first
    ("gemma", False, torch.bfloat16, True),    # Gemma: the family wants BOS whatever the tokenizer
])
def test_load_directory_default_dtype_and_bos(tmp_path, arch, tok_bos, saved, bos):
    from workbench.testing import tiny_model_dir

    d = tiny_model_dir(tmp_path / arch, arch, add_bos=tok_bos, dtype=saved)
    s = wb.Session.load(str(d), device="cpu")
    assert s.dtype == torch.float32                     # auto on the CPU
    assert s.prepend_bos is bos
    ids = s.encode("Paris")
    assert (ids[0] == s.tokenizer.bos_token_id) is bos
    assert ids.count(s.tokenizer.bos_token_id) == int(bos)   # never twice
    assert wb.Session.load(str(d), device="cpu", prepend_bos=not bos).prepend_bos is (not bos)


def test_resolve_dtype_auto(monkeypatch):
    from types import SimpleNamespace

    from workbench.session import resolve_dtype

    cuda = torch.device("cuda")
    cfg = {n: SimpleNamespace(dtype=getattr(torch, n)) for n in ("float32", "bfloat16", "float16")}
    assert resolve_dtype("auto", torch.device("cpu"), cfg["bfloat16"]) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu"), None) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda, cfg["float32"]) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda, cfg["float32"]) == torch.float32
    assert resolve_dtype("auto", cuda, cfg["float16"]) == torch.float16
    assert resolve_dtype("auto", cuda, cfg["bfloat16"]) == torch.bfloat16


def test_load_rejects_a_non_gguf_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(wb.UnknownModelError, match="gguf"):
        wb.Session.load(str(f))


# ---------------------------------------------------------------- lifetime (issue 14)
def test_close_drops_the_session_and_everything_it_owns(tok_dir):
    import gc
    import weakref

    from workbench.session import SessionClosedError
    from workbench.testing import tiny_session

    s = tiny_session("llama", tokenizer_dir=tok_dir)
    cap = wb.capture(s, "Paris is", ["mlp_post:1"])          # makes a fast-path object in s.owned
    assert s.owned and cap.path == "eager"
    from workbench.pure import pure_view

    view = weakref.ref(pure_view(s))
    model = weakref.ref(s.model)
    with s:
        pass                                                  # leaving the block closes it
    assert s.closed and not s.owned
    with pytest.raises(SessionClosedError, match="closed"):
        s.logits("Paris")
    gc.collect()
    assert view() is None and model() is None
    assert cap["mlp_post:1"].shape[-1] == 256                 # results outlive the session
    s2 = tiny_session("llama", tokenizer_dir=tok_dir)
    wb.capture(s2, "Paris is", ["mlp_post:1"])
    ref = weakref.ref(s2)
    del s2                                                    # dropped without close(): no cache holds it
    gc.collect()
    assert ref() is None


def _live_cuda_tensors() -> str:
    """The largest CUDA tensors still referenced (a leak's suspects), for assertion messages."""
    import gc

    found = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_cuda]
    found.sort(key=lambda t: -t.numel() * t.element_size())
    return "; ".join(f"{tuple(t.shape)} {t.dtype}" for t in found[:8])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_returns_to_pre_load_level(tok_dir):
    import gc

    from workbench.testing import random_session, tiny_session

    def allocated():
        gc.collect()
        torch.cuda.synchronize()
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear is not None:          # cuBLAS keeps a workspace per stream in the allocator
            clear()
        return torch.cuda.memory_allocated()

    before = allocated()
    s = random_session(device="cuda", dtype=torch.bfloat16)     # SmolLM2 shape, ~270 MB
    loaded = allocated() - before
    sites = wb.sites("mlp_post", session=s)
    paths = [wb.capture(s, "The Eiffel Tower is in", sites).path,
             wb.capture(s, s.tokenize(["word " * 600] * 8), sites).path]
    s.close()
    closed = allocated() - before
    closed_live = _live_cuda_tensors()
    s = random_session(device="cuda", dtype=torch.bfloat16)     # dropped, not closed
    wb.capture(s, "The Eiffel Tower is in", sites)
    del s
    dropped = allocated() - before
    dropped_live = _live_cuda_tensors()
    before = allocated()
    from workbench.fastpath import COMPILE_AFTER_USES

    t = tiny_session("gemma", d_model=256, d_mlp=1024, tokenizer_dir=tok_dir, device="cuda")  # ~8 MB
    long = t.tokenize(["word " * 200] * 24)
    paths += [wb.capture(t, long, wb.sites("mlp_post", session=t)).path for _ in range(COMPILE_AFTER_USES)][-2:]
    t.close()
    tiny = allocated() - before
    report = (f"loaded {loaded >> 20} MiB; after close {closed} B [{closed_live}]; after drop {dropped} B "
              f"[{dropped_live}]; tiny compiled after close {tiny} B; paths {paths}")
    print(report)
    assert loaded > 200 << 20 and paths == ["graph", "eager", "eager", "compiled"], report
    # after a compile a few hundred kB stay with torch.compile's own caches (192 kB seen on an H200)
    assert closed < 8 << 20 and dropped < 8 << 20 and tiny < 1 << 20, report
