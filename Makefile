# Kaggle solution pipeline. `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash

COMP ?= quora
SOURCE ?= sample
MODEL ?= all
ARGS ?=
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
export KERAS_HOME ?= $(CURDIR)/.keras
export TF_CPP_MIN_LOG_LEVEL ?= 2
RUN := $(PY) -m pipelines
COMPS := quora cervix

.PHONY: help setup data features train blend submit compare all sample-all test bench clean clean-data

help: ## list the targets (this message)
	@echo "Usage: make <target> [COMP=quora|cervix] [SOURCE=sample|kaggle|<path>] [MODEL=...] [ARGS='--opt val']"
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(VENV)/.installed ## create .venv (Python 3.11) and install the project with pinned dependencies

data: $(VENV)/.installed ## get a competition's raw data: COMP=quora|cervix SOURCE=sample|kaggle|<path>
	$(RUN) data --comp $(COMP) --source $(SOURCE) $(ARGS)

features: $(VENV)/.installed ## build cached model inputs from the raw data (COMP, SOURCE)
	$(RUN) features --comp $(COMP) --source $(SOURCE) $(ARGS)

train: $(VENV)/.installed ## K-fold train a model: MODEL=<name>|all (COMP, SOURCE); ARGS for model options
	$(RUN) train --comp $(COMP) --source $(SOURCE) --model $(MODEL) $(ARGS)

blend: $(VENV)/.installed ## OOF-fitted blend of the trained models and a leaderboard CSV in submissions/
	$(RUN) blend --comp $(COMP) --source $(SOURCE) $(ARGS)

submit: $(VENV)/.installed ## upload to Kaggle: SOURCE=kaggle FILE=submissions/<comp>/<name>.csv MESSAGE="..."
	$(RUN) submit --comp $(COMP) --source $(SOURCE) --file "$(FILE)" --message "$(MESSAGE)" $(ARGS)

compare: $(VENV)/.installed ## side-by-side report of every model and baseline (COMP, SOURCE)
	$(RUN) compare --comp $(COMP) --source $(SOURCE) $(ARGS)

all: $(VENV)/.installed ## whole pipeline on the built-in sample, both competitions (no credentials, no network)
	@set -e; for c in $(COMPS); do \
	  $(RUN) data --comp $$c --source sample; \
	  $(RUN) features --comp $$c --source sample; \
	  $(RUN) train --comp $$c --source sample --model all; \
	  $(RUN) blend --comp $$c --source sample; \
	  $(RUN) compare --comp $$c --source sample; \
	done

test: $(VENV)/.installed ## run the test suite
	$(PY) -m pytest -q $(ARGS)

bench: $(VENV)/.installed ## benchmarks (slow): figures written to BENCHMARKS.md; BENCH=<name> for one
	$(PY) -m benchmarks $(BENCH) $(ARGS)

clean: ## remove generated models, submissions and reports (keeps data/)
	rm -rf models/* reports/* && touch models/.gitkeep reports/.gitkeep

clean-data: ## remove generated data too (asks nothing: data/ holds only generated or imported copies)
	rm -rf data/* && touch data/.gitkeep
