# The README's two commands: `make run` (install + the whole pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint clean-outputs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision come from the pinned lock; pip finds them on this machine's disk.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	bash scripts/run_pipeline.sh

test: install
	bash scripts/run_tests.sh

lint: install
	$(BIN)/ruff check src tests bench serving
