# GANomaly inspection pipeline. `make help` lists the targets.
#   make train [CONFIG=configs/default.yaml] [RUN=name] [SET="train.epochs=3 data.seed=1"]
SHELL := /bin/bash
CONFIG ?= configs/default.yaml
RUN ?= $(basename $(notdir $(CONFIG)))
SET ?=
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ART := artifacts/$(RUN)
STAMPS := $(ART)/.stamps
GANOMALY = $(BIN)/ganomaly
ARGS = --config $(CONFIG) --run $(RUN) $(foreach s,$(SET),--set $(s))
# Stages read the resolved snapshot, so editing CONFIG mid-run cannot mix settings.
STAGE_ARGS = --config $(ART)/config.yaml --run $(RUN)

.PHONY: help setup ingest preprocess train evaluate export run test lint bench benchmark ui clean resolve

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(INSTALLED) ## create .venv and install the pinned dependencies (only when setup.py changed)

# Rewrites the per-stage config stamps only when their content changes, so a
# stage reruns exactly when its inputs or its part of the config changed.
resolve: $(INSTALLED)
	@$(GANOMALY) resolve $(ARGS)

$(STAMPS)/%.yaml: resolve ;

$(ART)/ingest/_SUCCESS: $(STAMPS)/ingest.yaml
	$(GANOMALY) ingest $(STAGE_ARGS)
$(ART)/preprocess/_SUCCESS: $(ART)/ingest/_SUCCESS $(STAMPS)/preprocess.yaml
	$(GANOMALY) preprocess $(STAGE_ARGS)
$(ART)/train/_SUCCESS: $(ART)/preprocess/_SUCCESS $(STAMPS)/train.yaml
	$(GANOMALY) train $(STAGE_ARGS)
$(ART)/evaluate/_SUCCESS: $(ART)/train/_SUCCESS $(STAMPS)/evaluate.yaml
	$(GANOMALY) evaluate $(STAGE_ARGS)
	@cat $(ART)/evaluate/metrics.json; echo
$(ART)/export/_SUCCESS: $(ART)/evaluate/_SUCCESS $(STAMPS)/export.yaml
	$(GANOMALY) export $(STAGE_ARGS)

ingest: $(ART)/ingest/_SUCCESS ## read, check and split the dataset
preprocess: $(ART)/preprocess/_SUCCESS ## preprocess into TFRecords
train: $(ART)/evaluate/_SUCCESS ## ingest -> preprocess -> train -> evaluate
evaluate: $(ART)/evaluate/_SUCCESS ## score the test split, write metrics and the report
export: $(ART)/export/_SUCCESS ## all of the above, then write the SavedModel

test: $(INSTALLED) ## run the test suite
	$(BIN)/pytest

lint: $(INSTALLED) ## ruff
	$(BIN)/ruff check .

include mlflow/server.env

ui: $(INSTALLED) ## serve the MLflow UI (mlflow/server.env: 127.0.0.1:5000, the local store)
	mkdir -p mlflow/artifacts
	$(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) \
	  --backend-store-uri $(MLFLOW_BACKEND_STORE_URI) \
	  --default-artifact-root $(MLFLOW_ARTIFACTS_DESTINATION)

bench: $(INSTALLED) ## ingest+preprocess images/s and peak memory (900x900 PNGs -> 128x128)
	$(BIN)/python -m pipeline.bench

benchmark: $(INSTALLED) ## the paper's MNIST protocol: train each digit, print the AUROC table
	for d in 0 1 2 3 4 5 6 7 8 9; do \
	  $(MAKE) --no-print-directory train CONFIG=configs/mnist.yaml RUN=mnist-$$d \
	    SET="data.source=mnist:$$d $(SET)" || exit 1; \
	done
	$(BIN)/python -m pipeline.benchmark artifacts

clean: ## remove artifacts/, generated data and the MLflow store (keeps .venv)
	rm -rf artifacts data mlflow/mlflow.db mlflow/artifacts
