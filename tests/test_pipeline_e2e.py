"""End to end: ingest -> preprocess -> train -> evaluate -> export on generated data."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from components.ingest import MANIFEST_COLUMNS
from pipeline import tracking
from pipeline.core.records import read_split
from pipeline.core.stages import STAGES

pytestmark = pytest.mark.slow

METRIC_KEYS = {
    "image_auroc",
    "image_ap",
    "f1",
    "precision",
    "recall",
    "threshold",
    "confusion_matrix",
    "pixel_auroc",
    "aupro",
    "n_test_normal",
    "n_test_abnormal",
    "f1_oracle",
}


def test_every_stage_finished(pipeline_run):
    _, run_path = pipeline_run
    for stage in STAGES:
        folder = run_path / stage.name
        assert (folder / "_SUCCESS").is_file(), stage.name
        entries = [(p.name, p.is_dir()) for p in folder.iterdir() if p.name != "_SUCCESS"]
        assert stage.undeclared(entries) == [], stage.name
        assert stage.missing(entries) == [], stage.name
    assert not list(run_path.glob(".*.tmp-*")), "a temporary stage folder was left behind"
    assert not list(run_path.glob(".*.old-*")), "a replaced stage folder was left behind"


def test_manifest_splits_do_not_overlap(pipeline_run):
    _, run_path = pipeline_run
    manifest = pd.read_csv(run_path / "ingest" / "manifest.csv", keep_default_na=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert manifest["path"].is_unique
    # Validation is carved from the training normals: 48 * 0.25 = 12.
    assert ((manifest["split"] == "val") & (manifest["label"] == 0)).sum() == 12
    assert (manifest[manifest["split"] == "train"]["label"] == 0).all()
    test = manifest[manifest["split"] == "test"]
    assert set(test["defect_type"]) == {"good", "scratch", "pit", "chip", "stain"}
    assert (test[test["label"] == 1]["mask_path"] != "").all()


def test_preprocessed_records_match_the_manifest(pipeline_run):
    _, run_path = pipeline_run
    info = json.loads((run_path / "preprocess" / "preprocess.json").read_text())
    assert info["splits"]["train"]["count"] == 36
    images = [ex["image"].numpy() for ex in read_split(run_path / "preprocess", "train")]
    assert len(images) == 36 and images[0].shape == (32, 32, 1)
    stacked = np.stack(images)
    assert stacked.min() >= -1.0 and stacked.max() <= 1.0 and stacked.std() > 0.05


def test_train_writes_history_and_best_weights(pipeline_run):
    _, run_path = pipeline_run
    history = pd.read_csv(run_path / "train" / "history.csv")
    assert len(history) == 2
    assert {"g_loss", "d_loss", "con_loss", "val_con_loss"} <= set(history.columns)
    assert (run_path / "train" / "model.weights.h5").stat().st_size > 0
    assert (run_path / "train" / "checkpoints" / "last.weights.h5").is_file()


def test_metrics_json_has_the_agreed_keys(pipeline_run):
    _, run_path = pipeline_run
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_test_normal"] == 6 and metrics["n_test_abnormal"] == 24
    cm = metrics["confusion_matrix"]
    assert sum(cm.values()) == 30 and cm["tn"] + cm["fp"] == 6
    assert metrics["pixel_auroc"] is not None and metrics["aupro"] is not None
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv", keep_default_na=False)
    assert len(scores) == 30
    assert metrics["image_auroc"] == pytest.approx(
        roc_auc_score(scores["label"], scores["score"]), abs=1e-9
    )
    expected_tp = ((scores["score"] >= metrics["threshold"]) & (scores["label"] == 1)).sum()
    assert cm["tp"] == expected_tp
    per_type = json.loads((run_path / "evaluate" / "pixel_auroc_per_defect_type.json").read_text())
    assert set(per_type) == set(scores.loc[scores["label"] == 1, "defect_type"])
    assert all(value is not None for value in per_type.values()), per_type


def test_auroc_per_defect_type_is_each_type_against_the_normals(pipeline_run):
    _, run_path = pipeline_run
    per_type = json.loads((run_path / "evaluate" / "auroc_per_defect_type.json").read_text())
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv", keep_default_na=False)
    normals = scores[scores["label"] == 0]
    defects = sorted(set(scores.loc[scores["label"] == 1, "defect_type"]))
    assert sorted(per_type) == defects == ["chip", "pit", "scratch", "stain"]
    for defect in defects:
        subset = pd.concat([normals, scores[scores["defect_type"] == defect]])
        expected = roc_auc_score(subset["label"], subset["score"])
        assert per_type[defect] == pytest.approx(expected, abs=1e-9), defect


SERVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    from PIL import Image
    export_dir, paths = sys.argv[1], json.loads(sys.argv[2])
    model = tf.saved_model.load(export_dir)
    images = np.stack([np.asarray(Image.open(p).convert("L"), np.float32)[..., None]
                       for p in paths])
    out = model.signatures["serving_default"](images=tf.constant(images))
    encoded = tf.constant([open(p, "rb").read() for p in paths])
    out_bytes = model.signatures["serving_bytes"](encoded=encoded)
    print(json.dumps({"score": out["score"].numpy().tolist(),
                      "is_anomaly": out["is_anomaly"].numpy().tolist(),
                      "score_bytes": out_bytes["score"].numpy().tolist()}))
    """
)


def test_savedmodel_in_a_fresh_process_gives_the_evaluate_scores(pipeline_run):
    _, run_path = pipeline_run
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(8)
    export_dir = run_path / "export" / "ganomaly" / "1"
    assert (export_dir / "saved_model.pb").is_file()
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(export_dir), json.dumps(scores["path"].tolist())],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    served = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(served["score"], scores["score"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(served["score_bytes"], scores["score"], rtol=1e-3, atol=1e-3)
    assert served["is_anomaly"] == scores["is_anomaly"].astype(bool).tolist()


def test_saved_model_cli_lists_the_signature(pipeline_run):
    _, run_path = pipeline_run
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    export_dir = run_path / "export" / "ganomaly" / "1"
    done = subprocess.run(
        [*cli, "show", "--dir", str(export_dir), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "serving_default" in done.stdout and "is_anomaly" in done.stdout


def test_one_mlflow_run_holds_every_stage(pipeline_run, mlflow_uri):
    mlflow = pytest.importorskip("mlflow")
    config, run_path = pipeline_run
    run_id = json.loads((run_path / tracking.RUN_FILE).read_text())["run_id"]
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "tiny"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["score.kind"] == "residual"
    for stage in ("ingest", "preprocess", "train", "evaluate", "export"):
        assert run.data.tags[f"stage.{stage}"] == "done"
    assert [m.step for m in client.get_metric_history(run_id, "g_loss")] == [1, 2]
    assert "image_auroc" in run.data.metrics
    assert any(name.startswith("pixel_auroc_") for name in run.data.metrics)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == config.experiment_name() == "synthetic-valve-seats"
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"ingest", "evaluate", "export"} <= top
    evaluated = {a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert "evaluate/metrics.json" in evaluated


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_mlflow_server_shows_the_run(pipeline_run, mlflow_uri, tmp_path):
    """What `make ui` serves: a real `mlflow server` on 127.0.0.1 over the same store."""
    _, run_path = pipeline_run
    run_id = json.loads((run_path / tracking.RUN_FILE).read_text())["run_id"]
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            mlflow_uri,
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow server did not come up") from None
                time.sleep(0.5)
        run = _get_json(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["model.ngf"] == "8"
        history = _get_json(
            f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=val_con_loss"
        )
        assert [m["step"] for m in history["metrics"]] == [1, 2]
        listed = _get_json(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=evaluate")
        assert "evaluate/report.md" in {f["path"] for f in listed["files"]}
    finally:
        server.terminate()
        server.wait(timeout=30)
