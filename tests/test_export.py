"""The exported SavedModel, as TF Serving and the Model Registry would run it.

Every test uses the real export of the session's tiny pipeline run (``pipeline_run``).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # make setup installs it

from components import export
from models.decoding import error_sentence
from pipeline.cli import run_stage
from pipeline.core import modeling, records
from pipeline.core.errors import PipelineError
from tests.conftest import tiny_config
from tests.test_decoding import FILES


def _version_dir(run_path: Path, version: int = 1) -> Path:
    return run_path / "export" / "ganomaly" / str(version)


@pytest.fixture(scope="module")
def served(pipeline_run):
    _, run_path = pipeline_run
    return tf.saved_model.load(str(_version_dir(run_path))).signatures


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _test_files(run_path: Path, n: int = 6) -> tuple[list[bytes], pd.DataFrame]:
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(n)
    return [Path(p).read_bytes() for p in scores["path"]], scores


# One decoder: every file kind scores the same through the pipeline and the SavedModel ---------


def _corpus(root: Path) -> list[str]:
    """An MVTec-style dataset whose test normals are one file of each kind ingest accepts."""
    rng = np.random.default_rng(3)
    for i in range(6):
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(path)
    kinds = sorted(FILES)
    for kind in kinds:
        suffix = {"png": ".png", "bmp": ".bmp", "jpeg": ".jpg"}[kind.split("_")[0]]
        target = root / "test" / "good" / f"{kind}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(FILES[kind]())
    return kinds


def test_every_file_kind_scores_the_same_in_the_pipeline_and_in_serving_bytes(
    pipeline_run, served, tmp_path
):
    config, run_path = pipeline_run
    kinds = _corpus(tmp_path / "corpus")
    corpus_config = tiny_config(f"data.source={tmp_path / 'corpus'}", "data.layout=mvtec")
    corpus_run = tmp_path / "artifacts" / "corpus"
    for stage in ("ingest", "preprocess"):
        run_stage(stage, corpus_config, "corpus", corpus_run)
    test = list(records.read_split(corpus_run / "preprocess", "test"))
    assert len(test) == len(kinds) == 22
    scorer = modeling.load_scorer(config, run_path / "train", run_path / "evaluate")
    pipeline_scores = scorer.score(tf.stack([ex["image"] for ex in test]))["score"].numpy()
    files = [Path(ex["path"].numpy().decode()).read_bytes() for ex in test]
    serving_scores = served["serving_bytes"](encoded=tf.constant(files))["score"].numpy()
    np.testing.assert_allclose(serving_scores, pipeline_scores, atol=1e-5, rtol=0)


# Requests: mixed sizes, empty batches, bad requests -------------------------------------------


def test_a_batch_of_files_of_different_sizes_scores_like_each_file_alone(served):
    rng = np.random.default_rng(0)
    files = [
        _png(rng.integers(0, 256, shape, dtype=np.uint8))
        for shape in ((40, 50), (64, 64), (33, 97))
    ]
    together = served["serving_bytes"](encoded=tf.constant(files))["score"].numpy()
    alone = [served["serving_bytes"](encoded=tf.constant([f]))["score"].numpy()[0] for f in files]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_both_signatures_take_an_empty_batch(served):
    empty_images = served["serving_default"](images=tf.zeros([0, 32, 32, 1]))
    empty_files = served["serving_bytes"](encoded=tf.constant([], tf.string))
    for out in (empty_images, empty_files):
        assert out["score"].shape == (0,) and out["is_anomaly"].shape == (0,)
        assert out["anomaly_map"].shape == (0, 32, 32)
        assert out["input_ok"].shape == (0,) and out["input_statistics"].shape == (0, 10)


EXPECTED = "expected float32 images of shape (N, H, W, 1) with pixel values 0-255"
BAD_IMAGES = {
    "nan": (
        np.full((1, 8, 8, 1), np.nan),
        f"pixels are NaN or infinite (a broken frame?): {EXPECTED}",
    ),
    "inf": (np.full((2, 8, 8, 1), np.inf), "pixels are NaN or infinite"),
    "range": (
        np.full((1, 8, 8, 1), 300.0),
        f"pixel values outside 0-255: {EXPECTED}; got min, max 300 300",
    ),
    "negative": (np.full((1, 8, 8, 1), -1.0), "pixel values outside 0-255"),
    "rank": (np.zeros((8, 8, 1)), f"wrong rank: {EXPECTED}; got shape 8 8 1"),
    "channels": (np.zeros((1, 8, 8, 3)), f"wrong channel count: {EXPECTED}; got shape 1 8 8 3"),
    "no_pixels": (np.zeros((1, 0, 8, 1)), f"an image has no pixels: {EXPECTED}; got shape 1 0 8 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_request_is_one_sentence_and_the_next_is_served(served, case):
    array, sentence = BAD_IMAGES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        served["serving_default"](images=tf.constant(array, tf.float32))
    assert error_sentence(refused.value).startswith(sentence)
    assert "\n" not in error_sentence(refused.value)
    good = served["serving_default"](images=tf.fill([1, 8, 8, 1], 128.0))
    assert np.isfinite(good["score"].numpy()).all()


BAD_FILES = {
    "empty string": (b"", "encoded file is an empty string: at index 1"),
    "not an image": (b"hello", "the file is not a PNG, JPEG or BMP image"),
    "truncated": (FILES["png_rgb"]()[:60], "Invalid PNG data"),
    "gif": (FILES["png_rgb"]()[:0] + b"GIF89a" + b"\0" * 20, "the file is not a PNG, JPEG or BMP"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_request_is_one_sentence_and_the_next_is_served(served, case):
    data, sentence = BAD_FILES[case]
    good = FILES["png_grey"]()
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        served["serving_bytes"](encoded=tf.constant([good, data]))
    assert error_sentence(refused.value).startswith(sentence)
    assert served["serving_bytes"](encoded=tf.constant([good]))["score"].shape == (1,)


# Input checks: the training statistics, measured again in the graph -------------------------


def test_the_served_input_statistics_are_those_preprocess_measured(pipeline_run, served):
    _, run_path = pipeline_run
    card = json.loads((_version_dir(run_path) / "assets" / "ganomaly.json").read_text())
    names, reference = card["input_statistics"]["names"], card["input_statistics"]
    measured = pd.read_csv(run_path / "preprocess" / "input_statistics.csv")
    measured = measured[measured["split"] == "test"]
    files = [Path(p).read_bytes() for p in measured["path"]]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(f)), np.float32)[..., None] for f in files])
    by_bytes = served["serving_bytes"](encoded=tf.constant(files))
    by_pixels = served["serving_default"](images=tf.constant(pixels))
    for out in (by_bytes, by_pixels):
        stats = out["input_statistics"].numpy()
        np.testing.assert_allclose(stats, measured[names], rtol=1e-5, atol=1e-4)
        # input_ok and input_z as the card's reference says, recomputed here.
        table = [reference["statistics"][n] for n in names]
        median = np.array([t["median"] for t in table])
        below, above = np.array([t["scale"] for t in table]).T
        z = (stats - median) / np.where(stats < median, below, above)
        worst = np.abs(z).argmax(axis=1)
        np.testing.assert_allclose(out["input_z"].numpy(), z[np.arange(len(z)), worst], rtol=1e-4)
        assert out["input_statistic"].numpy().tolist() == [names[i].encode() for i in worst]
        assert out["input_ok"].numpy().tolist() == (np.abs(z).max(1) <= 8.0).tolist()
    # Defective parts are parts: their frames are as usable as the normal ones.
    assert by_bytes["input_ok"].numpy().all()


def test_black_white_and_noise_frames_are_not_ok_in_both_signatures(served):
    frames = np.stack(
        [
            np.zeros((64, 64, 1)),
            np.full((64, 64, 1), 255.0),
            np.random.default_rng(0).integers(0, 256, (64, 64, 1)),
        ]
    ).astype(np.float32)
    by_pixels = served["serving_default"](images=tf.constant(frames))
    files = [_png(frame[..., 0].astype(np.uint8)) for frame in frames]
    by_bytes = served["serving_bytes"](encoded=tf.constant(files))
    for out in (by_pixels, by_bytes):
        assert out["input_ok"].numpy().tolist() == [False, False, False]
        assert out["input_statistic"].numpy().tolist() == [b"clipped", b"clipped", b"noise"]
        assert np.isfinite(out["score"].numpy()).all()  # still scored: two answers, not one


# What the version folder holds ------------------------------------------------------------------


def test_the_version_folder_describes_itself(pipeline_run):
    _, run_path = pipeline_run
    card = json.loads((_version_dir(run_path) / "assets" / "ganomaly.json").read_text())
    scoring = json.loads((run_path / "evaluate" / "scoring.json").read_text())
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    spec = records.read_info(run_path / "preprocess")["spec"]
    assert (card["isize"], card["channels"], card["preprocess"]) == (32, 1, spec)
    assert card["threshold"] == scoring["threshold"]
    assert card["pixel_threshold"] == scoring["map_threshold"]
    assert card["score"]["kind"] == "residual" and card["version"] == 1
    assert card["test_metrics"]["image_auroc"] == metrics["image_auroc"]
    recorded = json.loads((run_path / "mlflow_run.json").read_text())["run_id"]
    assert card["training_run_id"] == recorded
    assert len(card["git_commit"]) == 40
    reference = json.loads((run_path / "preprocess" / "input_statistics.json").read_text())
    assert card["input_statistics"] == reference and reference["count"] == 36
    assert card["validation_scores"] == scoring["validation_scores"]
    assert card["validation_scores"]["count"] == 12


def test_only_what_serving_needs_is_exported(pipeline_run):
    config, run_path = pipeline_run
    loaded = tf.saved_model.load(str(_version_dir(run_path)))
    scorer = modeling.load_scorer(config, run_path / "train", run_path / "evaluate")
    assert scorer.discriminator is None  # score.kind residual reads no discriminator
    assert len(loaded.variables) == len(scorer.weights)


def test_warmup_requests_are_prediction_logs_the_model_answers(pipeline_run, served):
    _, run_path = pipeline_run
    path = _version_dir(run_path) / "assets.extra" / "tf_serving_warmup_requests"
    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log.predict_log.request)
    assert sorted(r.model_spec.signature_name for r in logs) == ["serving_bytes", "serving_default"]
    for request in logs:
        assert request.model_spec.name == "ganomaly"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = served[request.model_spec.signature_name](**inputs)
        assert out["score"].shape == (1,) and np.isfinite(out["score"].numpy()).all()


# TF Serving's request formats ---------------------------------------------------------------


def test_grpc_predict_requests_give_the_evaluate_scores(pipeline_run, served):
    _, run_path = pipeline_run
    files, scores = _test_files(run_path)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(f)), np.float32)[..., None] for f in files])
    for signature, name, value in (
        ("serving_bytes", "encoded", np.array(files, dtype=object)),
        ("serving_default", "images", pixels),
    ):
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "ganomaly", signature
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        # What the server does with it: the TensorProto becomes the signature's input.
        out = served[signature](**{name: tf.constant(tf.make_ndarray(wire.inputs[name]))})
        np.testing.assert_allclose(out["score"].numpy(), scores["score"], atol=1e-3)


def _rest_tensor(value):
    """TF Serving's JSON decoding: {"b64": ...} objects are bytes, lists are arrays."""
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_rest_tensor(v) for v in value]
    return value


def test_rest_bodies_in_row_and_columnar_form_give_the_evaluate_scores(pipeline_run, served):
    _, run_path = pipeline_run
    files, scores = _test_files(run_path)
    encoded = [{"b64": base64.b64encode(f).decode()} for f in files]
    bodies = [
        {"signature_name": "serving_bytes", "instances": encoded},
        {"signature_name": "serving_bytes", "inputs": {"encoded": encoded}},
    ]
    for body in bodies:
        body = json.loads(json.dumps(body))  # over the wire
        column = body["instances"] if "instances" in body else body["inputs"]["encoded"]
        out = served[body["signature_name"]](encoded=tf.constant(_rest_tensor(column)))
        np.testing.assert_allclose(out["score"].numpy(), scores["score"], atol=1e-3)


def test_saved_model_cli_lists_both_signatures(pipeline_run):
    _, run_path = pipeline_run
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    done = subprocess.run(
        [*cli, "show", "--dir", str(_version_dir(run_path)), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("serving_default", "serving_bytes", "images", "encoded", "is_anomaly"):
        assert name in done.stdout, name


# Versions, the gate and the Model Registry ------------------------------------------------------


@pytest.fixture
def run_copy(pipeline_run, tmp_path):
    """A copy of the tiny run with an MLflow run of its own: the session's run stays as it was."""
    config, run_path = pipeline_run
    copy = tmp_path / "tiny"
    shutil.copytree(run_path, copy, symlinks=True)
    (copy / "mlflow_run.json").unlink()
    return config, copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_export_adds_the_next_version_and_keeps_the_old(run_copy):
    config, run_path = run_copy
    before = _snapshot(_version_dir(run_path, 1))
    run_stage("export", config, "tiny", run_path)
    assert export.existing_versions(run_path / "export" / "ganomaly") == [1, 2]
    assert _snapshot(_version_dir(run_path, 1)) == before
    card = json.loads((_version_dir(run_path, 2) / "assets" / "ganomaly.json").read_text())
    assert card["version"] == 2
    models_config = (run_path / "export" / "models.config").read_text()
    assert 'name: "ganomaly"' in models_config and 'base_path: "/models/ganomaly"' in models_config


def test_an_existing_version_is_refused_in_one_line_and_nothing_changes(run_copy, capsys):
    config, run_path = run_copy
    before = _snapshot(run_path / "export")
    pinned = tiny_config("export.version=1")
    with pytest.raises(PipelineError, match=r"version 1 exists and is never overwritten"):
        run_stage("export", pinned, "tiny", run_path)
    assert _snapshot(run_path / "export") == before


def test_the_gate_refuses_a_weak_model_and_keeps_every_version(run_copy):
    config, run_path = run_copy
    before = _snapshot(run_path / "export")
    auroc = json.loads((run_path / "evaluate" / "metrics.json").read_text())["image_auroc"]
    gated = tiny_config(f"export.min_image_auroc={min(1.0, auroc + 0.01):.4f}")
    with pytest.raises(PipelineError, match=r"^export refused: test image AUROC .* is below"):
        run_stage("export", gated, "tiny", run_path)
    assert _snapshot(run_path / "export") == before


def test_the_registered_model_scores_like_the_served_one(pipeline_run, served, mlflow_uri):
    import mlflow

    _, run_path = pipeline_run
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run_id = json.loads((run_path / "mlflow_run.json").read_text())["run_id"]
    ours = [v for v in client.search_model_versions("name='ganomaly'") if v.run_id == run_id]
    version = min(ours, key=lambda v: int(v.version))  # the pipeline's own export
    scoring = json.loads((run_path / "evaluate" / "scoring.json").read_text())
    assert float(version.tags["threshold"]) == pytest.approx(scoring["threshold"])
    assert version.tags["export_version"] == "1" and "image_auroc" in version.tags
    files, scores = _test_files(run_path)
    model = mlflow.pyfunc.load_model(f"models:/ganomaly/{version.version}")
    got = model.predict(pd.DataFrame({"image": files}))
    np.testing.assert_allclose(got["score"], scores["score"], atol=1e-3)
    assert got["is_anomaly"].tolist() == scores["is_anomaly"].astype(bool).tolist()
