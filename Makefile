# memcrm: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help install run test lint typecheck protos protos-check buf-lint train train-nba eval-enrichment eval-nba eval-memory bench-scale bench-nba clean

help: ## List the targets with one line each
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=75" wheel
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install memcrm with its pinned dependencies

$(BUF):
	mkdir -p .tools
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

run: $(STAMP) ## Start the embedded stores and the service in the foreground (Ctrl-C stops all)
	$(VENV)/bin/memcrm serve

test: $(STAMP) protos-check lint typecheck ## Install, check generated code, lint, type-check and run every test
	$(PY) -m pytest

lint: $(STAMP) $(BUF) ## ruff and buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd protos && ../$(BUF) lint

buf-lint: $(BUF)
	cd protos && ../$(BUF) lint

typecheck: $(STAMP) ## mypy --strict on our packages
	$(VENV)/bin/mypy -p memcrm.core -p memcrm.memory -p memcrm.models -p memcrm.explain -p memcrm.interpret -p memcrm.decisions -p memcrm.services -p memcrm.cli -p memcrm.evals

protos: $(STAMP) ## Regenerate Python code and type stubs from protos/
	PYTHON=$(abspath $(PY)) scripts/gen_protos.sh

protos-check: protos ## Fail when the committed generated code differs from the .proto files
	@git diff --exit-code --stat -- protos/ || { echo "generated protobuf code is stale: run 'make protos' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- protos/)" || { git status --porcelain -- protos/; echo "untracked generated files: run 'make protos' and commit"; exit 1; }

train: $(STAMP) ## Rebuild every shipped model from ../shared/data (MEMCRM_DATA_DIR) with fixed seeds
	$(PY) -m memcrm.models.train_enrichment all
	$(PY) -m memcrm.models.train_nba
	$(PY) -m memcrm.models.train_signals

train-nba: $(STAMP) ## Fine-tune TENANT's active NBA model on its recorded outcomes; register the version
	$(PY) -m memcrm.models.train_outcomes --tenant $(or $(TENANT),demo)

eval-enrichment: $(STAMP) ## Interpretation heads vs TF-IDF+LR baselines on held-out data (one JSON)
	@$(PY) -m memcrm.models.eval_enrichment

eval-nba: $(STAMP) ## NBA model: simulated AUC/accuracy/SHAP faithfulness + Telco churn vs sklearn; signals model figures (one JSON)
	@$(PY) -m memcrm.models.eval_nba

eval-memory: $(STAMP) ## LoCoMo evidence recall via gRPC vs BM25 and dense baselines (one JSON)
	@$(PY) -m memcrm.evals.eval_memory

bench-scale: $(STAMP) ## Recall/SearchMemories over 1M memories: gRPC vs bare SQL (long; one JSON; ARGS=...)
	@$(PY) scripts/bench_scale.py $(ARGS)

bench-nba: $(STAMP) ## NextBestAction p50/p99 and decisions/s beside Echo on a running service (one JSON; ARGS=...)
	@$(PY) scripts/bench_nba.py $(ARGS)

clean: ## Remove the virtualenv, tools and local data
	rm -rf $(VENV) .tools .memcrm .mypy_cache .ruff_cache .pytest_cache
