"""Property-based fuzz of the public API: every input gives a result or the project's own error.

Random layers, neurons, heads, sites, prompts (empty, whitespace, unicode, past the context),
positions, tensor widths, dtypes and NaN/inf tensors go through `capture`, the interventions,
the vocabulary readings, `direct_effects` and the `Session` methods of the tiny random Llama
and Gemma sessions. Each call must return normally or raise a `WorkbenchError` subclass (never
a stray TypeError/IndexError/RuntimeError traceback), and afterwards the session must be intact:
no hook left registered, every weight bitwise unchanged, the logits of a fixed prompt unchanged.
`test_zz_count` reports how many inputs were tried (FUZZ_INPUTS=N with ``pytest -s``).

The strategies hold no exclusions: units, layers, k, positions, targets, token counts and
widths also come as None, floats, strings, bools, empty lists and values past the vocabulary,
and site tuples carry any layer. `BAD_INPUTS` pins the 18 inputs this suite once found raising a
stray TypeError / ValueError / RuntimeError (Dec 2026, since fixed): each must raise one
`WorkbenchError` of the right kind whose message names the offending value.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.direct_effects import direct_effects
from workbench.errors import WorkbenchError

TRIED = {"n": 0}
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PROBE = "hello world"

# prompts: empty, whitespace, control characters, unicode, long (past the tiny models' 128 context)
PROMPTS = st.one_of(
    st.just(""), st.sampled_from([" ", "\n\t ", "\x00", "héllo wörld ✓", "日本語のテキスト", "🙂" * 5,
                                  "word " * 150, "a" * 700]),
    st.text(max_size=30),
)
INTS = st.one_of(st.integers(-3, 3), st.integers(-1000, 1000), st.sampled_from([2**31, -(2**40)]))
ODD = st.sampled_from([None, 1.5, "3", True, float("nan"), [1], ()])
LAYERS = st.one_of(INTS, ODD)
UNITS = st.one_of(INTS, st.lists(INTS, max_size=4), ODD)
KS = st.one_of(INTS, ODD)
KINDS = st.sampled_from(sorted(wb.SITE_KINDS) + ["bogus", "", "MLP_POST"])
SITES = st.one_of(st.builds(lambda k, layer: f"{k}:{layer}", KINDS, INTS),
                  st.builds(lambda k, layer: (k, layer), KINDS, LAYERS), st.text(max_size=12), ODD,
                  st.sampled_from([("mlp_post",), ("mlp_post", 0, 1), (["mlp_post"], 0), (None, 0)]))
# logit_lens: small k mostly (each kept token is decoded at every site), also past the vocabulary
K_LENS = st.one_of(st.integers(-3, 50), st.sampled_from([10**6, 2**31]), ODD)
POSITIONS = st.one_of(st.none(), INTS, st.lists(INTS, max_size=3), ODD)
TARGETS = st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=3), ODD)
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                          torch.bool])
FILL = st.sampled_from([0.0, 1.0, -3.5, 1e30, float("nan"), float("inf")])


def _state(s):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in s.model.modules())
    weights = {k: v.detach().clone() for k, v in s.hf_model.state_dict().items()}
    return hooks, weights


class _Sess(tuple):
    def __repr__(self) -> str:
        return f"<{self[0]!r} with its reference state>"


@pytest.fixture(scope="module", params=["tiny", "tiny_gemma"])
def sess(request):
    s = request.getfixturevalue(request.param)
    # warm up every path once (lazily built, persistent machinery is not a leak)
    wb.capture(s, PROBE, [f"{k}:0" for k in wb.SITE_KINDS], logits=True)
    logits = s.last_logits(PROBE).clone()
    hooks, weights = _state(s)
    return _Sess((s, hooks, weights, logits))


def run(sess, fn):
    """Call fn(); only a WorkbenchError may escape; then the session must be as it was."""
    s, hooks, weights, logits = sess
    TRIED["n"] += 1
    try:
        fn()
    except WorkbenchError as exc:
        assert str(exc), "a WorkbenchError must say what was wrong"
    h, w = _state(s)
    assert h == hooks, f"{h - hooks} hook(s) left registered"
    for k, v in weights.items():
        assert torch.equal(w[k], v), f"weight {k} changed"
    assert torch.equal(s.last_logits(PROBE), logits)


def _tensor(shape, dtype, fill):
    t = torch.full(shape, 0.0 if dtype in (torch.int64, torch.bool) and not math.isfinite(fill) else fill,
                   dtype=torch.float64)
    return t.to(dtype)


@SETTINGS
@given(prompt=PROMPTS, site=SITES, logits=st.booleans())
def test_capture(sess, prompt, site, logits):
    run(sess, lambda: wb.capture(sess[0], prompt, [site], logits=logits))


@SETTINGS
@given(prompts=st.lists(PROMPTS, min_size=0, max_size=3), layer=INTS)
def test_capture_batches(sess, prompts, layer):
    run(sess, lambda: wb.capture(sess[0], prompts, [("mlp_post", layer), f"resid_post:{layer}"]))


@SETTINGS
@given(which=st.sampled_from(["zero", "scale", "set", "ablate", "scale_heads"]), layer=LAYERS,
       units=UNITS, positions=POSITIONS, factor=st.one_of(st.floats(allow_nan=True), ODD),
       prompt=PROMPTS)
def test_interventions(sess, which, layer, units, positions, factor, prompt):
    def go():
        s = sess[0]
        iv = {"zero": lambda: wb.zero_neurons(layer, units, positions=positions),
              "scale": lambda: wb.scale_neurons(layer, units, factor, positions=positions),
              "set": lambda: wb.set_neurons(layer, units, factor, positions=positions),
              "ablate": lambda: wb.ablate_heads(layer, units, positions=positions),
              "scale_heads": lambda: wb.scale_heads(layer, units, factor, positions=positions)}[which]()
        with wb.intervene(s, iv):
            s.last_logits(prompt)
    run(sess, go)


@SETTINGS
@given(site=SITES, width=st.integers(0, 600), dtype=DTYPES, fill=FILL, positions=POSITIONS,
       scale=st.one_of(st.floats(allow_nan=True, allow_infinity=True), ODD), pos=st.integers(0, 3))
def test_vectors_and_patches(sess, site, width, dtype, fill, positions, scale, pos):
    def go():
        s = sess[0]
        vec = _tensor((width,), dtype, fill)
        iv = wb.add_vector(site, vec, scale=scale, positions=positions)
        with wb.intervene(s, iv):
            s.last_logits(PROBE)

    def go_patch():
        s = sess[0]
        src = _tensor((1, pos, width), dtype, fill)
        with wb.intervene(s, wb.patch(site, src, positions=positions)):
            s.last_logits(PROBE)
    run(sess, go)
    run(sess, go_patch)


@SETTINGS
@given(prompt=PROMPTS, targets=TARGETS, k=KS, k_lens=K_LENS, layer=LAYERS, units=UNITS,
       position=st.one_of(INTS, ODD))
def test_vocab(sess, prompt, targets, k, k_lens, layer, units, position):
    s = sess[0]
    run(sess, lambda: wb.logit_lens(s, prompt, targets, k=k_lens))
    run(sess, lambda: wb.value_tokens(s, layer, units, k=k))
    run(sess, lambda: wb.ffn_sub_updates(s, prompt, layer, position=position, k=k))
    run(sess, lambda: wb.top_tokens(s, torch.randn(s.d_vocab), k=k))


@SETTINGS
@given(prompt=PROMPTS, target=st.one_of(st.text(max_size=5), INTS, ODD))
def test_direct_effects(sess, prompt, target):
    run(sess, lambda: direct_effects(sess[0], prompt, target))


@SETTINGS
@given(prompt=PROMPTS, prompts=st.one_of(st.lists(PROMPTS, max_size=3), INTS, ODD),
       text=st.one_of(st.text(max_size=6), ODD), layer=LAYERS, unit=INTS,
       n=st.one_of(st.integers(-2, 4), ODD), width=st.sampled_from([0, 0, 1, -1, -64, 100]))
def test_session_methods(sess, prompt, prompts, text, layer, unit, n, width):
    s = sess[0]
    run(sess, lambda: s.token_id(text))
    run(sess, lambda: s.tokenize(prompt))
    run(sess, lambda: s.tokenize(prompts))
    run(sess, lambda: s.next_token(prompt))
    run(sess, lambda: s.generate(prompt, max_new_tokens=n))
    run(sess, lambda: s.check_layer(layer))
    run(sess, lambda: s.check_neuron(layer, unit))
    run(sess, lambda: s.check_head(layer, unit))
    run(sess, lambda: s.unembed(_tensor((2, s.d_model + width), torch.float32, 1.0)))
    run(sess, lambda: wb.ffn_weights(s, layer))


# Found by this suite (Dec 2026), each once a stray TypeError / ValueError / RuntimeError:
# (call, the WorkbenchError subclass it must raise, the offending value its message must name)
BAD_INPUTS = {
    "parse_site(('attn_out', None))": (lambda s: wb.capture(s, "hi", [("attn_out", None)]),
                                       wb.LayerOutOfRange, "None"),
    "parse_site(('attn_out', 'x'))": (lambda s: wb.capture(s, "hi", [("attn_out", "x")]),
                                      wb.LayerOutOfRange, "'x'"),
    "zero_neurons(0, 1.5)": (lambda s: wb.zero_neurons(0, 1.5), wb.NeuronOutOfRange, "1.5"),
    "zero_neurons(0, None)": (lambda s: wb.zero_neurons(0, None), wb.NeuronOutOfRange, "None"),
    "ablate_heads(0, None)": (lambda s: wb.ablate_heads(0, None), wb.HeadOutOfRange, "None"),
    "logit_lens(k=1.5)": (lambda s: wb.logit_lens(s, "hi", k=1.5), wb.ShapeError, "1.5"),
    "logit_lens(k=10**6)": (lambda s: wb.logit_lens(s, "hi", k=10**6), wb.ShapeError, "1000000"),
    "tokenize(None)": (lambda s: s.tokenize(None), wb.EmptyPromptError, "None"),
    "tokenize(3)": (lambda s: s.tokenize(3), wb.EmptyPromptError, "3"),
    "generate(max_new_tokens=None)": (lambda s: s.generate("hi", max_new_tokens=None), wb.ShapeError,
                                      "None"),
    "generate(max_new_tokens=1.5)": (lambda s: s.generate("hi", max_new_tokens=1.5), wb.ShapeError,
                                     "1.5"),
    "unembed(width d_model + 1)": (lambda s: s.unembed(torch.ones(2, s.d_model + 1)), wb.ShapeError,
                                   "65"),
    "logit_lens(targets=[])": (lambda s: wb.logit_lens(s, "hi", [], k=3), wb.TokenError, "[]"),
    "value_tokens(0, ())": (lambda s: wb.value_tokens(s, 0, (), k=3), wb.NeuronOutOfRange, "()"),
    "value_tokens(0, 1, k=1.5)": (lambda s: wb.value_tokens(s, 0, 1, k=1.5), wb.ShapeError, "1.5"),
    "top_tokens(k=None)": (lambda s: wb.top_tokens(s, torch.randn(s.d_vocab), k=None), wb.ShapeError,
                           "None"),
    "ffn_sub_updates(position=1.5)": (lambda s: wb.ffn_sub_updates(s, "hi there", 0, position=1.5),
                                      wb.PositionOutOfRange, "1.5"),
    "ffn_sub_updates(k='3')": (lambda s: wb.ffn_sub_updates(s, "hi there", 0, k="3"), wb.ShapeError,
                               "'3'"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs(tiny, name):
    call, kind, value = BAD_INPUTS[name]
    with pytest.raises(kind) as info:
        call(tiny)
    assert value in str(info.value), f"{name}: the message does not name {value}: {info.value}"


def test_zz_count():
    print(f"FUZZ_INPUTS={TRIED['n']}")
    assert TRIED["n"] >= 400
