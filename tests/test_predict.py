"""`ganomaly predict`: new images scored with only the exported SavedModel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components import overlay
from models.decoding import decode_bytes
from pipeline import drift, predict
from tests import test_decoding


@pytest.fixture(scope="module")
def predicted(pipeline_run, tmp_path_factory):
    """The tiny run's test images plus two bad files, predicted into a folder."""
    _, run_path = pipeline_run
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv", keep_default_na=False)
    inbox = tmp_path_factory.mktemp("inbox")
    for i, path in enumerate(scores["path"]):
        shutil.copy(path, inbox / f"{i:03d}_{Path(path).name}")
    (inbox / "notes.png").write_text("not an image\n")
    good = Path(scores["path"][0]).read_bytes()
    (inbox / "cut.png").write_bytes(good[: len(good) // 3])
    out = tmp_path_factory.mktemp("predictions")
    summary = predict.predict(run_path / "export" / "ganomaly", [str(inbox)], out, batch_size=4)
    return run_path, scores, out, summary


def test_predictions_are_the_evaluate_scores_and_decisions(predicted):
    _, scores, out, summary = predicted
    got = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(got) == len(scores) == summary["images"]
    # The copies are named <test index>_<name>: back to the evaluate order.
    got = got.assign(index=got["path"].map(lambda p: int(Path(p).name[:3]))).sort_values("index")
    np.testing.assert_allclose(got["score"], scores["score"], atol=1e-3)
    assert got["is_anomaly"].tolist() == scores["is_anomaly"].tolist()
    assert summary["flagged"] == int(scores["is_anomaly"].sum())


def test_regions_are_the_evaluate_regions_in_original_pixels(predicted):
    run_path, scores, out, _ = predicted
    got = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    regions = pd.read_csv(run_path / "evaluate" / "regions.csv")
    for row in got.itertuples():
        source = scores["path"][int(Path(row.path).name[:3])]
        expected = regions[regions["path"] == source]
        boxes = [tuple(map(int, b.split())) for b in str(row.boxes).split(";") if b]
        assert row.regions == len(boxes) == len(expected), source
        assert sorted(boxes) == sorted(
            expected[["y0", "x0", "y1", "x1"]].itertuples(index=False, name=None)
        )


def test_every_flagged_image_has_an_overlay(predicted):
    _, _, out, summary = predicted
    got = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    flagged = {Path(p).stem for p in got.loc[got["is_anomaly"] == 1, "path"]}
    assert {p.stem for p in (out / "overlays").glob("*.png")} == flagged
    assert summary["flagged"] == len(flagged)


def test_unreadable_inputs_go_to_errors_csv_and_do_not_stop_the_run(predicted):
    _, _, out, summary = predicted
    errors = pd.read_csv(out / "errors.csv")
    reasons = {Path(p).name: r for p, r in zip(errors["path"], errors["reason"])}
    assert sorted(reasons) == ["cut.png", "notes.png"] and summary["errors"] == 2
    assert reasons["notes.png"].startswith("the file is not a PNG, JPEG or BMP image")
    assert "PNG" in reasons["cut.png"]


def test_the_newest_version_of_a_model_folder_is_used(tmp_path):
    for version in (1, 2, 10):
        (tmp_path / str(version)).mkdir()
        (tmp_path / str(version) / "saved_model.pb").write_bytes(b"")
    (tmp_path / "11").mkdir()  # no SavedModel inside: not a version
    assert predict.version_folder(tmp_path) == tmp_path / "10"
    assert predict.version_folder(tmp_path / "2") == tmp_path / "2"


def test_the_command_prints_a_summary_and_bad_arguments_one_line(predicted, tmp_path):
    run_path, scores, _, _ = predicted
    command = [sys.executable, "-m", "pipeline.cli", "predict", "--model"]
    model = str(run_path / "export" / "ganomaly")
    done = subprocess.run(
        [*command, model, "--input", scores["path"][0], "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[predict] 1 images scored with version 1:" in done.stdout
    assert ", eta " in done.stdout or "1/1" in done.stdout
    bad = subprocess.run(
        [*command, str(tmp_path), "--input", scores["path"][0], "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    reason = "neither a SavedModel nor a folder of numbered versions"
    assert bad.stderr.strip() == f"ganomaly predict: error: {tmp_path}: {reason}"


# Input checks and drift --------------------------------------------------------------------


def test_input_ok_and_the_drift_report_are_the_served_models_outputs(predicted):
    import tensorflow as tf

    run_path, _, out, summary = predicted
    got = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    version = run_path / "export" / "ganomaly" / "1"
    served = tf.saved_model.load(str(version)).signatures["serving_bytes"]
    answer = served(encoded=tf.constant([Path(p).read_bytes() for p in got["path"]]))
    assert got["input_ok"].tolist() == answer["input_ok"].numpy().astype(int).tolist()
    assert got["input_statistic"].tolist() == [
        s.decode() for s in answer["input_statistic"].numpy()
    ]
    np.testing.assert_allclose(got["input_z"], answer["input_z"].numpy(), atol=0.006)
    report = json.loads((out / drift.REPORT_FILE).read_text())
    names = json.loads((version / "assets" / "ganomaly.json").read_text())["input_statistics"]
    medians = np.median(answer["input_statistics"].numpy(), axis=0)
    for name, median in zip(names["names"], medians):
        assert report["statistics"][name]["median"] == pytest.approx(median, rel=1e-6)
    drifted = [n for n, f in report["statistics"].items() if f["drifted"]]
    assert report["drifted"] == drifted + [drift.FLAGGED] * report[drift.FLAGGED]["drifted"]
    assert report["images"] == summary["images"] == len(got)
    assert report[drift.FLAGGED]["flagged"] == summary["flagged"]


def test_a_darker_run_warns_once_per_drifted_statistic_and_logs_to_mlflow(
    predicted, tmp_path, capsys, mlflow_uri
):
    import mlflow

    run_path, scores, _, _ = predicted
    inbox = tmp_path / "darker"
    inbox.mkdir()
    for i, path in enumerate(scores["path"]):
        pixels = np.asarray(Image.open(path), np.float32) * 0.85
        Image.fromarray(np.round(pixels).astype(np.uint8)).save(inbox / f"{i:03d}.png")
    model = str(run_path / "export" / "ganomaly")
    argv = ["--model", model, "--input", str(inbox), "--out", str(tmp_path / "out"), "--mlflow"]
    assert predict.main(argv) == 0
    report = json.loads((tmp_path / "out" / drift.REPORT_FILE).read_text())
    assert "brightness" in report["drifted"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == len(report["drifted"])
    assert warnings[report["drifted"].index("brightness")].startswith(
        "ganomaly predict: warning: brightness has drifted: median "
    )
    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run_id = json.loads((run_path / "mlflow_run.json").read_text())["run_id"]
    history = client.get_metric_history(run_id, "drift_brightness_median")
    assert history[-1].value == pytest.approx(report["statistics"]["brightness"]["median"])
    assert history[-1].step == len(history) - 1
    logged = client.list_artifacts(run_id, "predict")
    assert logged and logged[-1].is_dir


@pytest.fixture(scope="module")
def old_model(pipeline_run, tmp_path_factory):
    """The tiny run's model as exported before the input checks: none in the graph or card."""
    from models.serving import ASSET_FILE, serving_archive
    from pipeline.core import modeling, records

    config, run_path = pipeline_run
    card_path = run_path / "export" / "ganomaly" / "1" / "assets" / ASSET_FILE
    card = json.loads(card_path.read_text())
    scorer = modeling.load_scorer(config, run_path / "train", run_path / "evaluate")
    spec = records.read_info(run_path / "preprocess")["spec"]
    archive, _ = serving_archive(scorer, spec, card["threshold"])
    target = tmp_path_factory.mktemp("old") / "ganomaly" / "1"
    archive.write_out(str(target), verbose=False)
    for key in ("input_statistics", "validation_scores"):
        del card[key]
    (target / "assets" / ASSET_FILE).write_text(json.dumps(card))
    return target


def test_a_model_exported_before_the_checks_predicts_with_them_off(
    old_model, predicted, tmp_path, capsys
):
    _, scores, _, _ = predicted
    inputs = list(scores["path"][:3])
    assert (
        predict.main(["--model", str(old_model), "--input", *inputs, "--out", str(tmp_path)]) == 0
    )
    printed = capsys.readouterr()
    off = [line for line in printed.out.splitlines() if "drift checks are off" in line]
    assert off == [
        "[predict] drift checks are off for version 1: its model card has no input "
        "statistics (exported before them; export it again to have them)"
    ]
    assert "warning" not in printed.err
    got = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    np.testing.assert_allclose(got["score"], scores["score"][:3], atol=1e-3)
    assert got["input_ok"].tolist() == ["", "", ""]
    assert json.loads((tmp_path / drift.REPORT_FILE).read_text())["drifted"] is None


@pytest.mark.parametrize("kind", sorted(test_decoding.FILES))
def test_an_overlay_shows_the_pixels_the_model_decoded(kind):
    # Plain grey and RGB files are read by Pillow for overlays, the rest by the model's
    # decoder: every kind must give the picture the model scored, oriented the same way.
    data = test_decoding.FILES[kind]()
    np.testing.assert_array_equal(
        overlay._rgb(predict._overlay_pixels(data)), decode_bytes(data, 3)
    )


def test_the_graph_rewrites_are_off_only_while_predict_runs(predicted):
    import tensorflow as tf

    run_path, _, _, _ = predicted
    predictor = predict.Predictor(run_path / "export" / "ganomaly" / "1")
    options = tf.config.optimizer.get_experimental_options
    assert not options().get("disable_meta_optimizer", False)
    with predictor.graph_rewrites_off():
        assert options()["disable_meta_optimizer"]
    assert not options().get("disable_meta_optimizer", False)
