# Kaggle solution pipeline. `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash

COMP ?= quora
SOURCE ?= sample
MODEL ?= all
TRIALS ?= 20
TIMEOUT ?=
ARGS ?=
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
export KERAS_HOME ?= $(CURDIR)/.keras
export TF_CPP_MIN_LOG_LEVEL ?= 2
PIPELINE := $(PY) -m pipelines
# RUN=<name>: the run folder of `make train` under models/<comp>/<source>/<model>/ (default: what differs from the
# defaults + a hash); SEEDS=42,43,44: a run per seed and their bag.
RUN ?=
SEEDS ?=
# The competitions, from the registry (pipelines/competitions.py); read when a recipe runs, after setup.
COMPS = $(shell $(PY) -m pipelines.competitions)

.PHONY: help setup lock data features train tune blend submit compare all sample-all test bench clean clean-data

# Colour only on a terminal: `make help | cat` or a log file gets plain text.
help: ## list the targets (this message)
	@echo "Usage: make <target> [COMP=quora|cervix] [SOURCE=sample|kaggle|<path>] [MODEL=...] [ARGS='--opt val']"
	@echo
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; else on=; off=; fi; \
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-12s%s %s\n", on, $$1, off, $$2}'

# The environment comes from a lock of every transitive dependency with its hashes (make lock).
# GPU=1 installs requirements-gpu.lock (TensorFlow with CUDA); the choice sticks to the venv
# ($(VENV)/.gpu), so later targets keep it; GPU=0 goes back to the CPU lock.
GPU ?= $(if $(wildcard $(VENV)/.gpu),1,0)
LOCK := $(if $(filter 1,$(GPU)),requirements-gpu.lock,requirements.lock)
UV_VERSION := 0.13.9
LOCK_ARGS := --extra test --group build --generate-hashes --universal --python-version 3.11 \
             --custom-compile-command "make lock" --quiet$(if $(ARGS), $(ARGS))

$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(if $(filter 1,$(GPU)),@echo "(pip check skipped: the GPU lock has tensorflow in place of tensorflow-cpu)",$(PY) -m pip check)
	@if [ "$(GPU)" = 1 ]; then touch $(VENV)/.gpu; else rm -f $(VENV)/.gpu; fi
	@echo $(LOCK) > $@

# A venv installed from the other lock (GPU=1 after a CPU setup, or back) is installed again.
ifneq ($(shell cat $(VENV)/.installed 2>/dev/null),$(LOCK))
.PHONY: $(VENV)/.installed
endif

setup: $(VENV)/.installed ## create .venv (Python 3.11) from the lock file (GPU=1: with CUDA, requirements-gpu.lock)

# uv lives in its own venv: in the project's it would change the environment every run.json records.
LOCK_VENV ?= .cache/lock-venv
lock: ## regenerate requirements.lock and requirements-gpu.lock from pyproject.toml (index needed; ARGS=--upgrade)
	@test -x $(LOCK_VENV)/bin/python || $(PYTHON_BOOT) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK_VENV)/bin/python -m uv pip compile pyproject.toml $(LOCK_ARGS) -o requirements.lock
	$(LOCK_VENV)/bin/python -m uv pip compile pyproject.toml --extra gpu --no-emit-package tensorflow-cpu $(LOCK_ARGS) -o requirements-gpu.lock

data: $(VENV)/.installed ## get a competition's raw data: COMP=quora|cervix SOURCE=sample|kaggle|<path>
	$(PIPELINE) data --comp $(COMP) --source $(SOURCE) $(ARGS)

features: $(VENV)/.installed ## build cached model inputs from the raw data (COMP, SOURCE)
	$(PIPELINE) features --comp $(COMP) --source $(SOURCE) $(ARGS)

train: $(VENV)/.installed ## K-fold train a model: MODEL=<name>|all (COMP, SOURCE; RUN=<name>, SEEDS=42,43,44); ARGS for model options
	$(PIPELINE) train --comp $(COMP) --source $(SOURCE) --model $(MODEL)$(if $(RUN), --run $(RUN))$(if $(SEEDS), --seeds $(SEEDS)) $(ARGS)

tune: $(VENV)/.installed ## Optuna search over a model's options: MODEL=<name> TRIALS=N (default 20) [TIMEOUT=seconds]; the best becomes the run tuned-<study>
	$(PIPELINE) tune --comp $(COMP) --source $(SOURCE) --model $(MODEL) --trials $(TRIALS)$(if $(TIMEOUT), --timeout $(TIMEOUT))$(if $(RUN), --run $(RUN)) $(ARGS)

blend: $(VENV)/.installed ## OOF-fitted blend of the trained models and a leaderboard CSV in submissions/
	$(PIPELINE) blend --comp $(COMP) --source $(SOURCE) $(ARGS)

submit: $(VENV)/.installed ## upload to Kaggle: SOURCE=kaggle FILE=submissions/<comp>/<name>.csv MESSAGE="..."
	$(PIPELINE) submit --comp $(COMP) --source $(SOURCE) --file "$(FILE)" --message "$(MESSAGE)" $(ARGS)

compare: $(VENV)/.installed ## side-by-side report of every model and baseline (COMP, SOURCE)
	$(PIPELINE) compare --comp $(COMP) --source $(SOURCE) $(ARGS)

all: $(VENV)/.installed ## whole pipeline on the built-in sample, both competitions (no credentials, no network)
	@set -e; for c in $(COMPS); do \
	  $(PIPELINE) data --comp $$c --source sample; \
	  $(PIPELINE) features --comp $$c --source sample; \
	  $(PIPELINE) train --comp $$c --source sample --model all; \
	  $(PIPELINE) blend --comp $$c --source sample; \
	  $(PIPELINE) compare --comp $$c --source sample; \
	done

test: $(VENV)/.installed ## run the test suite
	$(PY) -m pytest -q $(ARGS)

bench: $(VENV)/.installed ## benchmarks (slow): figures written to BENCHMARKS.md; BENCH=<name> for one
	$(PY) -m benchmarks $(BENCH) $(ARGS)

clean: ## remove generated models, submissions and reports (keeps data/)
	rm -rf models/* reports/* && touch models/.gitkeep reports/.gitkeep

clean-data: ## remove generated data too (asks nothing: data/ holds only generated or imported copies)
	rm -rf data/* && touch data/.gitkeep
