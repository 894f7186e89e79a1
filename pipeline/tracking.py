"""MLflow: one run per pipeline run, shared by its stages.

    with tracking.stage_run(config, run_name, run_path, "train"):
        mlflow.log_metric(...)

The store is ``sqlite:///mlflow/mlflow.db`` with artifacts under
``mlflow/artifacts`` unless ``MLFLOW_TRACKING_URI`` says otherwise. The
experiment is named after the dataset. ``ingest`` opens a new run; later
stages find it through ``artifacts/<run>/mlflow_run.json`` and log into it,
unless the config changed in a way that contradicts the params it logged, in
which case they open a new run tagged with its parent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.config import Config

STORE_DIR = Path(os.environ.get("GANOMALY_MLFLOW_DIR", "mlflow"))
RUN_FILE = "mlflow_run.json"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's local sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    STORE_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def _experiment_id(mlflow, name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A sqlite store keeps its artifacts beside the database file, not in the cwd.
    location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _params(config: Config) -> dict[str, str]:
    return {key: str(value) for key, value in config.flat().items()}


def _recorded_run(run_path: Path) -> str | None:
    """The MLflow run id this pipeline run recorded, if any."""
    record = run_path / RUN_FILE
    return json.loads(record.read_text())["run_id"] if record.is_file() else None


def _reusable_run(mlflow, run_id: str | None, params: dict[str, str]) -> str | None:
    """``run_id`` if that run exists and its params agree with ``params``."""
    if run_id is None:
        return None
    try:
        logged = mlflow.get_run(run_id).data.params
    except Exception:  # noqa: BLE001 - a deleted run or another store: start afresh
        return None
    if any(logged.get(key, value) != value for key, value in params.items()):
        return None
    return run_id


@contextlib.contextmanager
def stage_run(config: Config, run_name: str, run_path: Path, stage: str) -> Iterator[str]:
    """Opens the pipeline run's MLflow run for ``stage``; yields its run id."""
    import mlflow  # noqa: PLC0415 - slow import, only for stages that log

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    params = _params(config)
    previous = _recorded_run(run_path)
    run_id = None if stage == "ingest" else _reusable_run(mlflow, previous, params)
    experiment_id = _experiment_id(mlflow, config.experiment_name())
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name) as run:
        if run_id is None:
            mlflow.log_params(params)
            if previous and stage != "ingest":
                mlflow.set_tag("parent_run_id", previous)
        run_path.mkdir(parents=True, exist_ok=True)
        tmp = run_path / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps({"run_id": run.info.run_id, "experiment_id": experiment_id}))
        tmp.replace(run_path / RUN_FILE)
        yield run.info.run_id
        mlflow.set_tag(f"stage.{stage}", "done")
