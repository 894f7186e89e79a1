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
SERVING_API := tensorflow-serving-api==2.21.0
ART := artifacts/$(RUN)
STAMPS := $(ART)/.stamps
GANOMALY = $(BIN)/ganomaly
ARGS = --config $(CONFIG) --run $(RUN) $(foreach s,$(SET),--set $(s))
# Stages read the resolved snapshot, so editing CONFIG mid-run cannot mix settings.
STAGE_ARGS = --config $(ART)/config.yaml --run $(RUN)

.PHONY: help setup stages ingest preprocess train evaluate export test test-quick lint bench benchmark ui \
  mlflow-server compare compare-plot mlproject clean resolve predict

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	# TF Serving's request protos, for the tests; without deps: it would pull the GPU build.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile --no-deps $(SERVING_API)
	# Bytecode on every core (pip compiles one file at a time); like pip, a file that
	# does not compile (a package's Python 2 example) is skipped. Not for the packages'
	# own test suites or pip, which nothing here imports (a fifth of the files).
	$(BIN)/python -m compileall -q -j 0 -x '/(tests|pip)/' $(VENV)/lib > /dev/null || true
	touch $@

setup: $(INSTALLED) ## create .venv and install the pinned dependencies (only when setup.py changed)

# The stamps: `ganomaly resolve` rewrites each stage's stamp only when its part of
# the config changed. It runs while make reads this file (under `make -n` too), so
# make sees true modification times and runs exactly the stages out of date; a
# config error stops make here, before any stamp, MLflow run or folder is touched.
# `make -n` writes nothing: the stamps that would change are only marked out of date.
STAGE_GOALS := ingest preprocess train evaluate export
ifneq ($(and $(filter $(STAGE_GOALS),$(MAKECMDGOALS)),$(wildcard $(INSTALLED))),)
ifneq ($(findstring n,$(firstword -$(MAKEFLAGS))),)
WOULD_CHANGE := $(shell $(GANOMALY) resolve --dry-run $(ARGS) 2>/dev/null || echo FAILED)
$(filter-out FAILED,$(WOULD_CHANGE)): FORCE
else
RESOLVE_ERROR := $(shell $(GANOMALY) resolve $(ARGS) 2>&1 >/dev/null)
ifneq ($(RESOLVE_ERROR),)
$(error $(RESOLVE_ERROR))
endif
endif
endif
FORCE:
# On a fresh machine (no .venv when make started) the stamps are written here.
$(STAMPS)/%.yaml: | $(INSTALLED)
	@$(GANOMALY) resolve $(ARGS)

resolve: $(INSTALLED) ## write artifacts/<run>/config.yaml and the stage stamps
	@$(GANOMALY) resolve $(ARGS)

# One rule per stage, from the stage table (pipeline/core/stages.py): a stage
# reruns when a stage it reads finished again or its part of the config changed.
STAGE_TABLE := $(shell $(PYTHON) pipeline/core/stages.py)
stage_name = $(word 1,$(subst =, ,$(1)))
stage_reads = $(subst $(comma), ,$(word 2,$(subst =, ,$(1))))
comma := ,
define stage_rule
$(ART)/$(call stage_name,$(1))/_SUCCESS: $(foreach r,$(call stage_reads,$(1)),$(ART)/$(r)/_SUCCESS) $(STAMPS)/$(call stage_name,$(1)).yaml
	$(GANOMALY) $(call stage_name,$(1)) $(STAGE_ARGS)
endef
$(foreach s,$(STAGE_TABLE),$(eval $(call stage_rule,$(s))))

stages: $(INSTALLED) ## what each stage reads and writes (the stage table)
	@$(GANOMALY) stages

ingest: $(ART)/ingest/_SUCCESS ## read, check and split the dataset
preprocess: $(ART)/preprocess/_SUCCESS ## preprocess into TFRecords
train: $(ART)/evaluate/_SUCCESS ## ingest -> preprocess -> train -> evaluate
	@cat $(ART)/evaluate/metrics.json; echo
evaluate: $(ART)/evaluate/_SUCCESS ## score the test split, write metrics and the report
	@cat $(ART)/evaluate/metrics.json; echo
export: $(ART)/export/_SUCCESS ## all of the above, then write the SavedModel

# One worker per core, a whole test module each (module fixtures are built once).
TEST_WORKERS ?= auto
test: $(INSTALLED) ## run the test suite [TEST_WORKERS=auto|0 for one process]
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-quick: $(INSTALLED) ## the inner loop: every test not marked slow (no pipeline runs)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: $(INSTALLED) ## ruff
	$(BIN)/ruff check .

include mlflow/server.env

# One worker and no job runner: the UI is one light process that starts in seconds.
MLFLOW_SERVER = MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --workers 1 \
  --host $(MLFLOW_HOST) --backend-store-uri $(MLFLOW_BACKEND_STORE_URI)

ui: $(INSTALLED) ## the MLflow UI on the local store (mlflow/server.env: 127.0.0.1:5000)
	mkdir -p mlflow/artifacts
	$(MLFLOW_SERVER) --port $(MLFLOW_PORT) --default-artifact-root $(MLFLOW_ARTIFACTS_DESTINATION)

mlflow-server: $(INSTALLED) ## a tracking server with served artifacts (127.0.0.1:5001)
	mkdir -p mlflow/artifacts
	$(MLFLOW_SERVER) --port $(MLFLOW_SERVER_PORT) --serve-artifacts \
	  --artifacts-destination $(MLFLOW_ARTIFACTS_DESTINATION)

EXPERIMENT ?=
METRIC ?= image_auroc
COMPARE = $(BIN)/python -m pipeline.compare --config $(CONFIG) --metric $(METRIC) \
  $(if $(EXPERIMENT),--experiment "$(EXPERIMENT)")

compare: $(INSTALLED) ## runs side by side: [EXPERIMENT=name] [METRIC=image_auroc]
	@$(COMPARE)

compare-plot: $(INSTALLED) ## the same, and artifacts/compare.png overlays validation curves
	@mkdir -p artifacts
	@$(COMPARE) --plot artifacts/compare.png

MODEL ?= $(ART)/export/ganomaly
INPUT ?=
PREDICTIONS ?= artifacts/predictions
predict: $(INSTALLED) ## score images with an exported model: MODEL=<export folder> INPUT=<files/dirs>
	@test -n "$(INPUT)" || { echo "make predict: set INPUT=<image files or folders>" >&2; exit 2; }
	$(GANOMALY) predict --model $(MODEL) --input $(INPUT) --out $(PREDICTIONS)

ENTRY ?= main
mlproject: $(INSTALLED) ## the pipeline through `mlflow run` (mlflow/MLproject): [ENTRY=main]
	export MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow/mlflow.db)}; \
	$(BIN)/mlflow run mlflow -e $(ENTRY) --env-manager local \
	  --experiment-name "$$($(GANOMALY) experiment $(ARGS))" \
	  -P config=$(abspath $(CONFIG)) -P run=$(RUN) -P set="$(SET)"

bench: $(INSTALLED) ## data pipeline speed and memory; training peak memory; model and SavedModel speed
	$(BIN)/python -m benchmarks.stages
	$(BIN)/python -m benchmarks.stages --format jpeg --sizes 1000 --train-sizes
	$(BIN)/python -m benchmarks.model
	$(BIN)/python -m benchmarks.serving --config $(CONFIG)

benchmark: $(INSTALLED) ## the paper's MNIST protocol: train each digit, print the AUROC table
	for d in 0 1 2 3 4 5 6 7 8 9; do \
	  $(MAKE) --no-print-directory train CONFIG=configs/mnist.yaml RUN=mnist-$$d \
	    SET="data.source=mnist:$$d $(SET)" || exit 1; \
	done
	$(BIN)/python -m benchmarks.mnist_table artifacts

clean: ## remove artifacts/, generated data and the MLflow store (keeps .venv)
	rm -rf artifacts data mlflow/mlflow.db mlflow/artifacts
