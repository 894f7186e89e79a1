"""MLflow: one run per pipeline run, shared by its stages; the lab notebook of every experiment.

    tracking.check_store()                      # before any work: a dead server fails fast
    with tracking.stage_run(config, run_name, run_path, "train"):
        mlflow.log_metric(...)

The store is ``sqlite:///mlflow/mlflow.db`` with artifacts under
``mlflow/artifacts`` unless ``MLFLOW_TRACKING_URI`` says otherwise. The
experiment is named after the dataset. ``ingest`` opens a new run (or adopts
the run that ``mlflow run`` launched the pipeline in); later stages find it
through ``artifacts/<run>/mlflow_run.json`` and log into it. A stage run again
with other settings logs into the same run: MLflow params cannot change, so
the run gets a ``rerun.<n>`` tag naming the stage and the settings that
changed, and ``config.<key>`` tags with their current values.

Every run records what produced it: the whole resolved config as params; git
commit (and whether the tree was dirty), project, TensorFlow, Keras and MLflow
versions, the artifacts folder and each stage's status as tags.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.config import Config, dump_config
from pipeline.core.errors import PipelineError

STORE_DIR = Path(os.environ.get("GANOMALY_MLFLOW_DIR", "mlflow"))
RUN_FILE = "mlflow_run.json"
REPO = Path(__file__).resolve().parent.parent
# A tracking server must answer within this many seconds, before any work starts.
SERVER_TIMEOUT_S = 5.0


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's local sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    STORE_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def check_store(uri: str | None = None) -> None:
    """Fails in one line, within seconds, when a tracking server is down or refuses.

    Local stores (sqlite, files) need no check; an ``http(s)`` server must answer
    its REST API before a stage does any work.
    """
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(probe, timeout=SERVER_TIMEOUT_S) as response:
            response.read(1)
    except urllib.error.HTTPError as err:
        raise PipelineError(
            f"MLflow tracking server {uri} refused the request (HTTP {err.code} {err.reason})"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it "
            "(make mlflow-server) or unset MLFLOW_TRACKING_URI for the local store"
        ) from None


def ensure_experiment(config: Config) -> str:
    """The id of the config's experiment in the tracking store, created if missing."""
    import mlflow  # noqa: PLC0415

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    return _experiment_id(mlflow, config.experiment_name())


def _sqlite_database(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for any other store."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _local_store_lock() -> Iterator[None]:
    """Holds an exclusive lock on a local sqlite store (``mlflow.db.lock`` beside it).

    Two stages started at once on a new store would both run its schema
    migrations, and all but one fail ("duplicate column name: step"); two could
    also both create the same experiment. A server store serialises these itself.
    """
    database = _sqlite_database(tracking_uri())
    if database is None:
        yield
        return
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment_id(mlflow, name: str) -> str:
    """The experiment's id, looked up and created under the store's lock."""
    with _local_store_lock():
        return _created_experiment_id(mlflow, name)


def _created_experiment_id(mlflow, name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A sqlite store keeps its artifacts beside the database file, not in the cwd.
    location = None
    database = _sqlite_database(tracking_uri())
    if database is not None:
        location = (database.parent / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _params(config: Config) -> dict[str, str]:
    return {key: str(value) for key, value in config.flat().items()}


def _recorded_run(run_path: Path) -> str | None:
    """The MLflow run id this pipeline run recorded, if any."""
    record = run_path / RUN_FILE
    return json.loads(record.read_text())["run_id"] if record.is_file() else None


def _existing_params(client, run_id: str | None) -> dict[str, str] | None:
    """The params of ``run_id``, or None when there is no such run in this store."""
    if run_id is None:
        return None
    try:
        return client.get_run(run_id).data.params
    except Exception:  # noqa: BLE001 - a deleted run or another store: start afresh
        return None


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def provenance_tags(run_path: Path) -> dict[str, str]:
    """What produced a run: code version, library versions, where its artifacts are."""
    tags = {"artifacts_dir": str(Path(run_path).resolve())}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    for tag, package in (
        ("project_version", "ganomaly-inspection"),
        ("tensorflow_version", "tensorflow-cpu"),
        ("keras_version", "keras"),
        ("mlflow_version", "mlflow"),
    ):
        try:
            tags[tag] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            if package == "tensorflow-cpu":  # the GPU build
                with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                    tags[tag] = importlib.metadata.version("tensorflow")
    return tags


def _record_rerun(client, run, stage: str, logged: dict[str, str], params: dict[str, str]):
    """Tags a stage that ran again on a run, with the settings that changed since."""
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
    reruns = int(run.data.tags.get("reruns", "0")) + 1
    words = ", ".join(f"{k}={v} (logged {logged[k]})" for k, v in sorted(changed.items()))
    client.set_tag(run.info.run_id, "reruns", str(reruns))
    client.set_tag(run.info.run_id, f"rerun.{reruns}", f"{stage}" + (f": {words}" if words else ""))
    for key, value in changed.items():
        client.set_tag(run.info.run_id, f"config.{key}", value)


def _find_run(client, run_path: Path, stage: str) -> tuple[str | None, dict[str, str]]:
    """The run this stage logs into and its params: ``(None, {})`` for a new run.

    Ingest starts a pipeline run afresh, in the run ``mlflow run`` launched it
    in if there is one; later stages use the run recorded in ``mlflow_run.json``.
    """
    launched = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run` (MLproject)
    candidates = [launched] if stage == "ingest" else [_recorded_run(run_path), launched]
    for run_id in candidates:
        logged = _existing_params(client, run_id)
        if logged is not None:
            return run_id, logged
    return None, {}


@contextlib.contextmanager
def stage_run(config: Config, run_name: str, run_path: Path, stage: str) -> Iterator[str]:
    """Opens the pipeline run's MLflow run for ``stage``; yields its run id."""
    import mlflow  # noqa: PLC0415 - slow import, only for stages that log

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    params = _params(config)
    client = mlflow.tracking.MlflowClient()
    with _local_store_lock():  # the store's first use may create its schema
        run_id, logged = _find_run(client, run_path, stage)
    if run_id is None:
        start = {"experiment_id": _experiment_id(mlflow, config.experiment_name())}
    else:
        start = {"run_id": run_id}
    with mlflow.start_run(**start, run_name=run_name) as run:
        if not set(params) & set(logged):  # a new run, or the one `mlflow run` opened
            mlflow.log_params(params)
            mlflow.set_tags(provenance_tags(run_path))
        elif run.data.tags.get(f"stage.{stage}") or any(
            logged.get(k, v) != v for k, v in params.items()
        ):
            _record_rerun(client, run, stage, logged, params)
        mlflow.set_tag(f"stage.{stage}", "running")
        run_path.mkdir(parents=True, exist_ok=True)
        tmp = run_path / f".{RUN_FILE}.tmp"
        record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
        tmp.write_text(json.dumps(record))
        tmp.replace(run_path / RUN_FILE)
        try:
            yield run.info.run_id
        except BaseException:
            mlflow.set_tag(f"stage.{stage}", "failed")
            raise
        mlflow.set_tag(f"stage.{stage}", "done")
        mlflow.log_text(dump_config(config), "config.yaml")  # the settings of the last stage
