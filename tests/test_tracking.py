"""MLflow as the lab notebook: the run record, reruns, a dead server, errors before any record."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline import tracking
from pipeline.cli import STAGES, main, run_stage
from tests.conftest import TINY_OVERRIDES, tiny_config

REPO = Path(__file__).resolve().parents[1]
GANOMALY = str(Path(sys.executable).with_name("ganomaly"))
CONFIG = str(REPO / "configs" / "default.yaml")


def _client(uri: str):
    import mlflow

    return mlflow.tracking.MlflowClient(uri)


def _run_id(run_path: Path) -> str:
    return json.loads((run_path / tracking.RUN_FILE).read_text())["run_id"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ganomaly(tmp_path: Path, *args: str, uri: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GANOMALY_ARTIFACTS": str(tmp_path / "artifacts"),
        "MLFLOW_TRACKING_URI": uri,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [GANOMALY, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_run_records_what_produced_it(pipeline_run, mlflow_uri):
    config, run_path = pipeline_run
    client = _client(mlflow_uri)
    run = client.get_run(_run_id(run_path))
    assert run.data.params == {key: str(value) for key, value in config.flat().items()}
    tags = run.data.tags
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert tags["git_commit"] == commit and tags["git_dirty"] in ("True", "False")
    assert tags["artifacts_dir"] == str(run_path.resolve())
    import keras
    import mlflow
    import tensorflow as tf

    assert tags["tensorflow_version"] == tf.__version__
    assert tags["keras_version"] == keras.__version__
    assert tags["mlflow_version"] == mlflow.__version__
    assert tags["project_version"] == "0.1.0"


def test_the_dataset_is_the_runs_input_with_its_digest_and_counts(pipeline_run, mlflow_uri):
    import hashlib

    import pandas as pd

    _, run_path = pipeline_run
    run = _client(mlflow_uri).get_run(_run_id(run_path))
    (dataset_input,) = run.inputs.dataset_inputs
    tags = {tag.key: tag.value for tag in dataset_input.tags}
    manifest = run_path / "ingest" / "manifest.csv"
    assert tags["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert tags["source"] == "synthetic:valve-seats" and tags["mlflow.data.context"] == "ingest"
    frame = pd.read_csv(manifest, keep_default_na=False)
    for (split, kind), count in frame.groupby(["split", "defect_type"]).size().items():
        assert tags[f"n_{split}_{kind}"] == str(count)
    assert dataset_input.dataset.name == "synthetic-valve-seats"


def test_metrics_per_epoch_and_each_final_metric_once(pipeline_run, mlflow_uri):
    _, run_path = pipeline_run
    client, run_id = _client(mlflow_uri), _run_id(run_path)
    speed = client.get_metric_history(run_id, "train_images_per_s")
    assert [m.step for m in speed] == [1, 2] and all(m.value > 0 for m in speed)
    assert [m.step for m in client.get_metric_history(run_id, "val_con_loss")] == [1, 2]
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    for name in ("n_test_abnormal", "n_test_normal", "image_auroc"):
        history = client.get_metric_history(run_id, name)
        assert len(history) == 1, name
        assert history[0].value == pytest.approx(metrics[name]), name


def test_a_stage_rerun_logs_into_the_same_run_and_says_what_changed(pipeline_run, mlflow_uri):
    _, run_path = pipeline_run
    copy = run_path.parent / "rerun"
    for stage in ("ingest", "preprocess", "train"):
        shutil.copytree(run_path / stage, copy / stage)
    config = tiny_config()
    run_stage("evaluate", config, "rerun", copy)  # no record yet: a run of its own
    run_id = _run_id(copy)
    assert run_id != _run_id(run_path)
    changed = tiny_config("threshold.quantile=0.95")
    run_stage("evaluate", changed, "rerun", copy)
    assert _run_id(copy) == run_id
    run = _client(mlflow_uri).get_run(run_id)
    assert run.data.params["threshold.quantile"] == "0.99"  # MLflow params cannot change
    assert run.data.tags["reruns"] == "1"
    assert run.data.tags["rerun.1"] == "evaluate: threshold.quantile=0.95 (logged 0.99)"
    assert run.data.tags["config.threshold.quantile"] == "0.95"
    threshold = json.loads((copy / "evaluate" / "metrics.json").read_text())["threshold"]
    assert run.data.metrics["threshold"] == pytest.approx(threshold)


def test_a_dead_tracking_server_fails_fast_in_one_line_before_any_work(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    done = _ganomaly(tmp_path, "ingest", "--config", CONFIG, uri=uri)
    assert time.monotonic() - started < 10
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "not reachable" in lines[0], done.stderr
    assert not (tmp_path / "artifacts").exists()  # nothing started, nothing written


def test_a_mistyped_source_touches_no_record_stamp_or_run(tmp_path, mlflow_uri, data_dir):
    # A finished run: its stamps, MLflow record and experiment must survive the typo.
    good = tmp_path / "artifacts" / "typo"
    run_stage("ingest", tiny_config(), "typo", good)
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    experiments = {e.name for e in _client(mlflow_uri).search_experiments()}
    overrides = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    for command in ("resolve", "ingest", "train"):
        done = _ganomaly(
            tmp_path,
            command,
            "--config",
            CONFIG,
            "--run",
            "typo",
            *overrides,
            "--set",
            "data.source=/nonexistent",
            uri=mlflow_uri,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"ganomaly {command}: error: data.source: /nonexistent does not exist (a folder, "
            "a CSV file, or one of synthetic:valve-seats, mnist:<digit>, elpv)"
        )
    after = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    assert after == before
    assert {e.name for e in _client(mlflow_uri).search_experiments()} == experiments


def _tiny_yaml(tmp_path: Path) -> Path:
    sections: dict[str, dict] = {}
    for override in TINY_OVERRIDES:
        key, _, value = override.partition("=")
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({s: {k: yaml.safe_load(v) for k, v in kv.items()}
                                    for s, kv in sections.items()}))  # fmt: skip
    return path


def _get(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def tracking_server(tmp_path) -> Iterator[str]:
    """`make mlflow-server` in ``tmp_path``: a real server with served artifacts; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--workers", "1",
         "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--serve-artifacts", "--artifacts-destination", str(tmp_path / "served")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not come up"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_make_mlproject_logs_the_pipeline_to_a_real_tracking_server(tmp_path, tracking_server):
    """`make mlflow-server`, then `MLFLOW_TRACKING_URI=http://127.0.0.1:PORT make mlproject`.

    One pipeline run checks both: what the server holds (through its REST API) and
    that the MLproject's run lands in the config's experiment, leaving the repo as it was.
    """
    base = tracking_server
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": base,
        "GANOMALY_ARTIFACTS": str(tmp_path / "artifacts"),
        "GANOMALY_DATA_DIR": str(tmp_path / "data"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    before = set(os.listdir(REPO))
    done = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "mlproject",
         f"CONFIG={_tiny_yaml(tmp_path)}", "RUN=mlp", "SET=train.epochs=1"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(os.listdir(REPO)) == before  # no ./mlflow.db or ./mlruns left behind
    run_path = tmp_path / "artifacts" / "mlp"
    run_id = _run_id(run_path)
    # The MLproject's run, the only one in the config's experiment.
    client = _client(base)
    experiment = client.get_experiment_by_name("synthetic-valve-seats")
    (listed_run,) = client.search_runs([experiment.experiment_id])
    assert listed_run.info.run_id == run_id
    # What the server holds, read through its REST API.
    run = _get(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.project.entryPoint"] == "main"
    assert all(tags[f"stage.{s}"] == "done" for s in STAGES)
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["preprocess.isize"] == "32"  # from the config
    assert params["train.epochs"] == "1" and params["set"] == "train.epochs=1"  # from SET
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    local = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert metrics["image_auroc"] == pytest.approx(local["image_auroc"])
    (dataset_input,) = run["inputs"]["dataset_inputs"]
    assert dataset_input["dataset"]["name"] == "synthetic-valve-seats"
    listed = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=evaluate")
    assert "evaluate/metrics.json" in {f["path"] for f in listed["files"]}
    assert (tmp_path / "served").is_dir()  # the server stored them, not the client


def test_the_experiment_command_keeps_a_sqlite_stores_artifacts_beside_it(
    tmp_path, monkeypatch, capsys
):
    """`ganomaly experiment`, which `make mlproject` calls first; no pipeline run needed.

    The experiment it creates in a sqlite store keeps its artifacts in the store's
    folder, next to mlflow.db, where `make ui` finds them, not in the folder it ran in.
    """
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(cwd)
    assert main(["experiment", "--config", str(_tiny_yaml(tmp_path))]) == 0
    assert capsys.readouterr().out == "synthetic-valve-seats\n"
    experiment = _client(uri).get_experiment_by_name("synthetic-valve-seats")
    assert experiment.artifact_location == (store / "artifacts").as_uri()
    assert not list(cwd.iterdir())  # no ./mlruns


@pytest.mark.slow
def test_commands_started_at_once_on_a_new_sqlite_store_all_succeed(tmp_path):
    """Three `ganomaly experiment`s at once on a store no one has opened yet.

    Without the store's lock they all run the schema migrations, and most of them
    fail ("duplicate column name: step"), as two `make train`s started together did.
    """
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [GANOMALY, "experiment", "--config", str(_tiny_yaml(tmp_path))]
    started = [
        subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=120) for process in started]  # no full pipe
    done = [(p.returncode, *out) for p, out in zip(started, outputs, strict=True)]
    assert [(rc, out) for rc, out, _ in done] == [(0, "synthetic-valve-seats\n")] * 3, done
    experiments = _client(uri).search_experiments()
    assert sorted(e.name for e in experiments) == ["Default", "synthetic-valve-seats"]
