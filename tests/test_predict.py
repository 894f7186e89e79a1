"""`ganomaly predict`: new images scored with only the exported SavedModel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import predict


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
