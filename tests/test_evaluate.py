"""The evaluate stage's threshold choice and metric assembly, on hand-made scores."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from components.evaluate import (
    BATCH_SIZE,
    MAX_BATCH_PIXELS,
    choose_threshold,
    image_metrics,
    pixel_auroc_per_type,
    pixel_metrics,
    scoring_batch_size,
    verified_sources,
)
from pipeline.core.config import load_config
from pipeline.core.errors import DataError, PipelineError


def _split(labels, scores, defect_types=None):
    labels = np.asarray(labels)
    types = defect_types or ["good" if y == 0 else "crack" for y in labels]
    return {
        "label": labels,
        "score": np.asarray(scores, dtype=float),
        "defect_type": np.asarray(types),
        "mask": np.zeros((len(labels), 4, 4), np.uint8),
        "anomaly_map": np.zeros((len(labels), 4, 4)),
        "roi": np.ones((len(labels), 4, 4), np.uint8),
    }


def test_scoring_batches_shrink_as_maps_grow_and_never_to_zero():
    assert scoring_batch_size((64, 64)) == BATCH_SIZE
    assert scoring_batch_size((320, 128)) == BATCH_SIZE  # mvtec.yaml's head on long frames
    assert scoring_batch_size((640, 256)) == BATCH_SIZE // 4
    assert scoring_batch_size((640, 256)) * 640 * 256 <= MAX_BATCH_PIXELS
    assert scoring_batch_size((8192, 8192)) == 1


def test_quantile_threshold_uses_validation_normals_only():
    # Normals score 0..99; the defect's 1000 must not move a normals-only quantile.
    val = _split([0] * 100 + [1], [*range(100), 1000])
    config = load_config(None, ["threshold.method=quantile", "threshold.quantile=0.99"])
    threshold, how = choose_threshold(config, val)
    assert threshold == pytest.approx(98.01)  # numpy linear quantile of 0..99 at 0.99
    assert "0.99 quantile" in how


def test_f1_threshold_needs_and_uses_labelled_validation():
    config = load_config(None, ["threshold.method=f1"])
    with pytest.raises(PipelineError, match="val_abnormal_fraction"):
        choose_threshold(config, _split([0, 0, 0], [0.1, 0.2, 0.3]))
    # Normals 0.1 0.2 0.6, defects 0.5 0.9: flagging >= 0.5 gives tp 2, fp 1 -> F1 0.8,
    # flagging >= 0.9 gives tp 1 -> F1 0.667; the best is 0.5.
    threshold, _ = choose_threshold(config, _split([0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.9]))
    assert threshold == pytest.approx(0.5)


def test_fixed_threshold_is_taken_as_given():
    config = load_config(None, ["threshold.method=fixed", "threshold.value=1.5"])
    assert choose_threshold(config, _split([0, 1], [0.0, 2.0])) == (1.5, "fixed")


def test_image_metrics_at_the_threshold_and_per_defect_type():
    test = _split(
        [0, 0, 0, 1, 1, 1],
        [0.1, 0.4, 0.7, 0.6, 0.9, 0.3],
        ["good", "good", "good", "crack", "crack", "dent"],
    )
    result, per_type = image_metrics(test, threshold=0.5)
    # >= 0.5: normals 0.7 (fp); defects 0.6, 0.9 (tp), 0.3 missed (fn).
    assert result["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    # crack (0.6, 0.9) vs normals (0.1, 0.4, 0.7): 5 of 6 pairs ordered right.
    assert per_type["crack"] == pytest.approx(5 / 6)
    # dent (0.3) beats only 0.1 of the three normals.
    assert per_type["dent"] == pytest.approx(1 / 3)
    # Oracle: flagging >= 0.6 gives tp 2, fp 1, fn 1 -> 2/3; >= 0.3 gives tp 3, fp 2 -> 0.75.
    assert result["f1_oracle"] == pytest.approx(0.75)


def test_pixel_metrics_are_null_without_masks_and_computed_with_them():
    test = _split([0, 1], [0.0, 1.0])
    assert pixel_metrics(test) == {"pixel_auroc": None, "aupro": None}
    test["mask"][1, 1:3, 1:3] = 1
    test["anomaly_map"][1, 1:3, 1:3] = 5.0
    assert pixel_metrics(test) == {"pixel_auroc": 1.0, "aupro": pytest.approx(1.0)}


def test_pixel_auroc_per_type_pairs_each_type_with_the_normal_images_only():
    test = _split([0, 1, 1], [0.0, 1.0, 1.0], ["good", "crack", "stain"])
    assert pixel_auroc_per_type(test) == {}  # no masks: nothing to report
    test["mask"][1, 0, 0] = 1  # crack: one pixel, mapped 3 (above every normal pixel)
    test["anomaly_map"][1, 0, 0] = 3.0
    test["mask"][2, :2, :] = 1  # stain: 8 pixels mapped 1, its other 8 pixels 0
    test["anomaly_map"][2, :2, :] = 1.0
    test["anomaly_map"][0, 0, :2] = 2.0  # two hot pixels on the normal image
    per_type = pixel_auroc_per_type(test)
    # crack: 3 beats all 31 normal pixels (16 of the good image, 15 of its own).
    assert per_type["crack"] == pytest.approx(1.0)
    # stain: its 8 pixels at 1 beat 22 of the 24 normal pixels (0s) and lose to the two 2s.
    assert per_type["stain"] == pytest.approx(22 / 24)
    # The pooled figure mixes both types' normals: pairs across images count too.
    assert pixel_metrics(test)["pixel_auroc"] != pytest.approx(per_type["stain"])


def _manifest(tmp_path) -> pd.DataFrame:
    """Two test images (one with a mask) and a training image, with their real digests."""
    rows = []
    files = (("a.png", "test", "a_mask.png"), ("b.png", "test", ""), ("c.png", "train", ""))
    for name, split, mask in files:
        (tmp_path / name).write_bytes(name.encode() * 10)
        mask_path, mask_digest = "", ""
        if mask:
            (tmp_path / mask).write_bytes(b"mask")
            mask_path, mask_digest = str(tmp_path / mask), _digest(tmp_path / mask)
        row = {"path": str(tmp_path / name), "split": split, "mask_path": mask_path}
        rows.append({**row, "sha256": _digest(tmp_path / name), "mask_sha256": mask_digest})
    return pd.DataFrame(rows)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unchanged_sources_pass_and_give_the_mask_paths(tmp_path):
    manifest = _manifest(tmp_path)
    assert verified_sources(manifest) == {
        str(tmp_path / "a.png"): str(tmp_path / "a_mask.png"),
        str(tmp_path / "b.png"): "",
        str(tmp_path / "c.png"): "",
    }


@pytest.mark.parametrize(
    "change, named, problem",
    [
        (lambda d: (d / "b.png").write_bytes(b"edited"), "b.png", "changed since ingest"),
        (lambda d: (d / "a_mask.png").write_bytes(b"other"), "a_mask.png", "changed since ingest"),
        (lambda d: (d / "a.png").unlink(), "a.png", "cannot read it again"),
    ],
)
def test_a_changed_or_missing_source_is_one_line_naming_the_file(tmp_path, change, named, problem):
    manifest = _manifest(tmp_path)
    change(tmp_path)
    with pytest.raises(DataError) as caught:
        verified_sources(manifest)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / named) + ": ") and problem in message
    assert "\n" not in message


def test_only_test_files_are_reopened_so_only_they_are_checked(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "c.png").write_bytes(b"a training image, edited")
    verified_sources(manifest)  # evaluate never reopens training images
