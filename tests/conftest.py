"""Shared fixtures: tiny random models for mechanics, the embedded models for meaning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Shapes written in signatures are enforced while the suite runs (`make test` sets
# WORKBENCH_TYPECHECK=1): jaxtyping's import hook wraps every function of the library in
# @jaxtyped(typechecker=beartype), so a Float[Tensor, "batch pos d_model"] that gets another
# shape, dtype or type fails the test that passed it. Off outside the suite: no cost for users.
if os.environ.get("WORKBENCH_TYPECHECK") == "1":
    from jaxtyping import install_import_hook

    # PEP 484's numeric tower (an int where a float is annotated), as mypy reads annotations
    install_import_hook(["workbench", "editing"],
                        "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")



def pytest_configure(config):
    # the project's own warnings are errors in the suite (resolved per test, after the hook above)
    config.addinivalue_line("filterwarnings", "error::workbench.errors.WorkbenchWarning")


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="session")
def tiny(tok_dir):
    """Random-init 2-layer Llama (gated SiLU MLP, GQA) with a 512-token BPE tokenizer."""
    from workbench.testing import tiny_session

    return tiny_session("llama", tokenizer_dir=tok_dir)


@pytest.fixture(scope="session")
def tiny_gemma(tok_dir):
    """Random-init 2-layer Gemma 3 (post-norms, GELU-tanh gated MLP), BOS prepended."""
    from workbench.testing import tiny_session

    return tiny_session("gemma", tokenizer_dir=tok_dir, prepend_bos=True)


@pytest.fixture(scope="session")
def smollm():
    """The embedded default model, SmolLM2-135M-Instruct (float32, CPU)."""
    from workbench import Session

    return Session.load("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M (float32, CPU)."""
    from workbench import Session

    return Session.load("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def small_corpus_path() -> Path:
    """The project's own small corpus (data/), always present."""
    return ROOT / "data" / "corpus" / "tiny_corpus.txt"
