# `make train` and `make test` set up .venv on first use, then run. Extra args: ARGS="...".
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install train test test-all lint format tensorboard clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv with torch and dann[dev]

train: $(STAMP)  ## DANN on the default pair (embedded data offline); ARGS="dataset=... trainer.max_epochs=..."
	$(PY) train.py $(ARGS)

test: $(STAMP)  ## run the test suite (CPU, offline)
	$(PY) -m pytest $(ARGS)

test-all: $(STAMP)  ## tests including the slow ones
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## ruff fix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: $(STAMP)  ## compare runs under outputs/
	$(VENV)/bin/tensorboard --logdir outputs

clean:  ## remove outputs and caches (keeps .venv and data/)
	rm -rf outputs .pytest_cache .ruff_cache
