"""Evaluate: calibrate the scores on validation, set the threshold there, score the test split.

    ganomaly evaluate --config configs/default.yaml --run default

Reads ``artifacts/<run>/preprocess/`` (the train, val and test records),
``artifacts/<run>/train/model.weights.h5`` and ``artifacts/<run>/ingest/manifest.csv``
(the source images and masks it reopens for regions and overlays, each checked
against its sha256 first).

Writes ``artifacts/<run>/evaluate/``:
- ``metrics.json``: image_auroc, image_ap, f1, precision, recall, threshold,
  confusion_matrix {tn, fp, fn, tp}, pixel_auroc, aupro (null without
  masks), n_test_normal, n_test_abnormal, plus f1_oracle (best F1 on the
  test set itself, for comparison with published figures only).
- ``auroc_per_defect_type.json``: each defect type against the test normals.
- ``pixel_auroc_per_defect_type.json``: the same per type for pixels (empty without masks).
- ``scores.csv``: per test image its scores and decision.
- ``score_statistics.npz``: the scorer's frozen validation statistics (export uses them).
- ``scoring.json``: the score options, image and pixel thresholds, how the
  threshold was chosen, summary statistics, and the validation normals' score
  distribution with their false alarms at the threshold (``validation_scores``).
- ``regions.csv``: the defect regions of every test image, in original pixels.
- ``suspects.csv``: every training and validation normal (path, score, split, and
  ``planted`` where the manifest has it) by the same score as the test images,
  highest first: defective parts filed as good are near the top. With planted
  images (``data.contamination``) MLflow gets ``planted_recall_at_2k``: the share
  of them among the top twice-their-number rows.
- ``report.md``, ``roc.png``, ``pr.png``, ``score_histogram.png`` and
  ``overlays/`` (the galleries): the inspection report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from components import evaluation_metrics as metrics
from components import evaluation_report, localize
from pipeline.core import modeling
from pipeline.core.config import Config
from pipeline.core.errors import DataError, PipelineError
from pipeline.core.records import model_inputs, read_split

BATCH_SIZE = 64
# A scoring batch holds at most the map pixels of 64 maps of 128 x 320 (mvtec.yaml's head
# on long frames): a head at 256 x 640 in batches of 64 filled a 24 GB machine and was killed.
MAX_BATCH_PIXELS = BATCH_SIZE * 128 * 320


def scoring_batch_size(map_size: tuple[int, int]) -> int:
    """Images per scoring batch for maps of ``map_size``: ``BATCH_SIZE``, fewer where large."""
    height, width = map_size
    return max(1, min(BATCH_SIZE, MAX_BATCH_PIXELS // (height * width)))


# What ``score_records`` keeps by default: every scorer output and record field that
# evaluate reads (the test split's metrics, regions and report).
SCORER_OUTPUTS = ("score", "latent", "map_score", "anomaly_map")
RECORD_FIELDS = ("mask", "roi", "label", "defect_type", "path")
TEXT_FIELDS = ("defect_type", "path")


def score_records(
    scorer,
    examples: tf.data.Dataset,
    outputs: tuple[str, ...] = SCORER_OUTPUTS,
    fields: tuple[str, ...] = RECORD_FIELDS,
) -> dict:
    """Runs the scorer over records in batches; returns numpy arrays, one per key.

    Args:
        scorer: a calibrated ``Scorer`` (with tiles it cuts and stitches itself).
        examples: unbatched records (``read_split``), possibly filtered.
        outputs: the scorer outputs to keep.
        fields: the record fields to keep; text ones are decoded to ``str``.

    Returns:
        ``{key: array}`` for every key of ``outputs`` and ``fields``, in record order.
    """
    columns: dict[str, list] = {key: [] for key in (*outputs, *fields)}
    for batch in examples.batch(scoring_batch_size(scorer.map_size)):
        out = scorer.score(model_inputs(batch))
        for key in outputs:
            columns[key].append(ops.convert_to_numpy(out[key]))
        for key in fields:
            values = batch[key].numpy()
            if key in TEXT_FIELDS:
                values = np.array([v.decode() for v in values], dtype=str)
            columns[key].append(values)
    # An empty selection (no normals in a split) gives empty columns, not an error.
    return {
        key: np.concatenate(parts) if parts else np.array([], str if key in TEXT_FIELDS else float)
        for key, parts in columns.items()
    }


def score_split(scorer, preprocess_dir: Path, split: str) -> dict:
    """Runs the scorer over one split; returns numpy arrays of scores, maps and labels."""
    return score_records(scorer, read_split(preprocess_dir, split))


def choose_threshold(config: Config, val: dict) -> tuple[float, str]:
    """The decision threshold from the validation split only; returns (value, how)."""
    method = config.threshold.method
    if method == "fixed":
        return config.threshold.value, "fixed"
    if method == "f1":
        if not (val["label"] == 1).any():
            raise PipelineError(
                "threshold.method f1 needs defective validation images: "
                "set data.val_abnormal_fraction > 0 (labelled defects train the head and "
                "never set the threshold), or use threshold.method quantile"
            )
        threshold, _ = metrics.best_f1_threshold(val["label"], val["score"])
        defects, normals = int((val["label"] == 1).sum()), int((val["label"] == 0).sum())
        return threshold, f"best F1 on validation ({defects} defects, {normals} normals)"
    normals = val["score"][val["label"] == 0]
    q = config.threshold.quantile
    return metrics.quantile_threshold(normals, q), f"{q:g} quantile of validation normals"


def pixel_metrics(test: dict) -> dict:
    """pixel_auroc and aupro over the test images, inside the ROI; null without masks."""
    has_masks = test["mask"][test["label"] == 1].any()
    if not has_masks:
        return {"pixel_auroc": None, "aupro": None}
    masks, maps, roi = test["mask"] > 0, test["anomaly_map"], test["roi"] > 0
    return {
        "pixel_auroc": metrics.pixel_auroc(masks, maps, roi=roi),
        "aupro": metrics.aupro(masks, maps, roi=roi),
    }


def _defect_type_subsets(test: dict):
    """Yields ``(defect type, selector of its images and of the normal ones)``."""
    labels, types = test["label"], test["defect_type"]
    for defect in sorted(set(types[labels == 1])):
        yield defect, (labels == 0) | (types == defect)


def pixel_auroc_per_type(test: dict) -> dict:
    """Pixel AUROC of each defect type: its images' pixels and the test normals' pixels.

    The pooled ``pixel_auroc`` is weighted by defect area, so one type with large masks
    can hide how well the small ones are found; this shows each type on its own.
    Empty without masks.
    """
    if not test["mask"][test["label"] == 1].any():
        return {}
    return {
        defect: metrics.pixel_auroc(
            test["mask"][keep] > 0, test["anomaly_map"][keep], roi=test["roi"][keep] > 0
        )
        for defect, keep in _defect_type_subsets(test)
    }


def image_metrics(test: dict, threshold: float) -> tuple[dict, dict]:
    """The image-level metrics at ``threshold``, and the AUROC per defect type."""
    labels, scores = test["label"], test["score"]
    report = metrics.classification_report(labels, scores, threshold)
    _, f1_oracle = metrics.best_f1_threshold(labels, scores)
    per_type = {
        defect: metrics.image_auroc(labels[keep], scores[keep])
        for defect, keep in _defect_type_subsets(test)
    }
    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "image_ap": metrics.image_ap(labels, scores),
        "f1": report["f1"],
        "precision": report["precision"],
        "recall": report["recall"],
        "threshold": float(threshold),
        "confusion_matrix": report["confusion_matrix"],
        "f1_oracle": f1_oracle,
    }, per_type


@dataclasses.dataclass
class Evaluation:
    """What the evaluation of one scorer found.

    Attributes:
        result: the ``metrics.json`` content.
        per_type: image AUROC of each defect type.
        threshold_origin: how the image threshold was chosen, in words.
        statistics: the scorer's calibration summary.
        map_threshold: the pixel threshold for regions.
        val: the validation split's arrays (``score_split``).
        test: the test split's arrays.
    """

    result: dict
    per_type: dict
    threshold_origin: str
    statistics: dict
    map_threshold: float
    val: dict
    test: dict


def evaluate_scorer(scorer, config: Config, preprocess_dir: Path) -> Evaluation:
    """Calibrates on validation normals, thresholds on validation, scores test."""
    val_normals = read_split(preprocess_dir, "val").filter(lambda ex: ex["label"] == 0)
    statistics = scorer.calibrate(
        val_normals.map(model_inputs).batch(scoring_batch_size(scorer.map_size))
    )
    val = score_split(scorer, preprocess_dir, "val")
    threshold, origin = choose_threshold(config, val)
    test = score_split(scorer, preprocess_dir, "test")
    result, per_type = image_metrics(test, threshold)
    result.update(pixel_metrics(test))
    result["n_test_normal"] = int((test["label"] == 0).sum())
    result["n_test_abnormal"] = int((test["label"] == 1).sum())
    normal = val["label"] == 0
    map_threshold = localize.map_threshold(
        val["anomaly_map"][normal], config.evaluate.map_quantile, roi=val["roi"][normal]
    )
    return Evaluation(result, per_type, origin, statistics, map_threshold, val, test)


SUSPECTS_FILE = "suspects.csv"


def suspects(scorer, preprocess_dir: Path, val: dict, manifest: pd.DataFrame) -> pd.DataFrame:
    """Every training and validation normal by its anomaly score, highest first.

    A defective part filed as good is trained on as normal; it still tends to score
    above the real normals, so the top of this table is where to look for it. The
    validation normals keep the scores evaluate already gave them (``val``).

    Args:
        scorer: the calibrated scorer that scored the test split.
        preprocess_dir: the preprocess stage's folder (the training records).
        val: the validation split's arrays (``score_split``).
        manifest: the ingest manifest; its ``planted`` column, where it has one,
            is carried over (the real defect type of a planted "normal").

    Returns:
        Columns ``path``, ``score``, ``split`` (and ``planted``), sorted by score,
        highest first.
    """
    normals = read_split(preprocess_dir, "train").filter(lambda ex: ex["label"] == 0)
    train = score_records(scorer, normals, outputs=("score",), fields=("path",))
    keep = val["label"] == 0
    frame = pd.concat(
        [
            pd.DataFrame({"path": train["path"], "score": train["score"], "split": "train"}),
            pd.DataFrame({"path": val["path"][keep], "score": val["score"][keep], "split": "val"}),
        ],
        ignore_index=True,
    )
    if "planted" in manifest:
        frame["planted"] = frame["path"].map(dict(zip(manifest["path"], manifest["planted"])))
    # Stable: equal scores stay in split and record order, so the file is reproducible.
    return frame.sort_values("score", ascending=False, kind="stable", ignore_index=True)


def planted_recall(table: pd.DataFrame) -> float | None:
    """Share of the planted defects among the top ``2k`` suspects (``k`` planted); None if none."""
    found, count = evaluation_report.planted_in_top(table)
    return found / count if count else None


def verified_sources(manifest: pd.DataFrame) -> dict[str, str]:
    """Checks the test images (and their masks) against the manifest's sha256.

    Evaluate reopens these files for regions and overlays; a dataset that moved
    or changed since ingest would silently give wrong boxes.

    Returns:
        image path -> mask path ("" without one), for every manifest row.

    Raises:
        DataError: naming the first file that is missing or whose bytes changed.
    """
    for row in manifest[manifest["split"] == "test"].itertuples():
        _check_file(Path(row.path), row.sha256)
        if row.mask_path:
            _check_file(Path(row.mask_path), row.mask_sha256)
    return dict(zip(manifest["path"], manifest["mask_path"]))


def _check_file(path: Path, sha256: str) -> None:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise DataError(
            f"{path}: cannot read it again ({err.strerror or err}); did the dataset move "
            "since ingest? run the ingest stage again"
        ) from None
    if digest != sha256:
        raise DataError(
            f"{path}: changed since ingest (sha256 differs from the manifest); "
            "run the ingest stage again"
        )


def _write_scores(test: dict, threshold: float, path: Path) -> None:
    columns = ("path", "label", "defect_type", "score", "latent", "map_score")
    frame = pd.DataFrame({key: test[key] for key in columns})
    frame["is_anomaly"] = (test["score"] >= threshold).astype(int)
    frame.to_csv(path, index=False)


def validation_scores(val: dict, threshold: float) -> dict:
    """The validation normals' score distribution and false alarms at ``threshold``.

    ``ganomaly predict`` tests each run's share of flagged images against it.
    """
    normals = val["score"][val["label"] == 0].astype(np.float64)
    return {
        "count": int(len(normals)),
        "false_alarms": int((normals >= threshold).sum()),
        "quantiles": [float(q) for q in np.quantile(normals, np.linspace(0, 1, 101))],
    }


def _write_scoring(ev: Evaluation, config: Config, out: Path) -> None:
    scoring = {
        "threshold": ev.result["threshold"],
        "map_threshold": ev.map_threshold,
        "threshold_method": ev.threshold_origin,
        "score": dataclasses.asdict(config.score),
        "stats": ev.statistics,
        "validation_scores": validation_scores(ev.val, ev.result["threshold"]),
    }
    (out / "scoring.json").write_text(json.dumps(scoring, indent=2))


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Evaluates the trained model on the test split; writes metrics and the report."""
    import mlflow  # noqa: PLC0415

    manifest = pd.read_csv(inputs["ingest"] / "manifest.csv", keep_default_na=False)
    mask_paths = verified_sources(manifest)
    model = modeling.load_trained(config, inputs["train"])
    scorer = modeling.build_scorer(config, model)
    ev = evaluate_scorer(scorer, config, inputs["preprocess"])
    result, test = ev.result, ev.test
    pixel_per_type = pixel_auroc_per_type(test)
    regions = localize.localize(
        test, ev.map_threshold, config.evaluate, resize=config.preprocess.resize
    )
    scorer.save_statistics(out / modeling.STATISTICS_FILE)
    _write_scoring(ev, config, out)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "auroc_per_defect_type.json").write_text(json.dumps(ev.per_type, indent=2))
    (out / "pixel_auroc_per_defect_type.json").write_text(json.dumps(pixel_per_type, indent=2))
    _write_scores(test, result["threshold"], out / "scores.csv")
    suspect_table = suspects(scorer, inputs["preprocess"], ev.val, manifest)
    suspect_table.to_csv(out / SUSPECTS_FILE, index=False)
    recall = planted_recall(suspect_table)
    evaluation_report.write(
        {**result, "map_threshold": ev.map_threshold},
        ev.per_type,
        ev.threshold_origin,
        test,
        out,
        regions,
        gallery_size=config.evaluate.gallery_size,
        mask_paths=mask_paths,
        resize=config.preprocess.resize,
        pixel_per_type=pixel_per_type,
        suspects=suspect_table,
    )
    mlflow.log_metrics(_loggable(result, ev.per_type, pixel_per_type))
    if recall is not None:
        mlflow.log_metric("planted_recall_at_2k", recall)
    mlflow.log_artifacts(str(out), artifact_path="evaluate")
    print(
        f"[evaluate] image AUROC {result['image_auroc']}, F1 {result['f1']:.3f} at threshold "
        f"{result['threshold']:.3f} ({ev.threshold_origin})",
        flush=True,
    )


def _loggable(result: dict, per_type: dict, pixel_per_type: dict) -> dict[str, float]:
    """Flattens metrics.json and the per-type AUROCs into MLflow metrics (nulls left out)."""
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
    flat.update({f"cm_{k}": v for k, v in result["confusion_matrix"].items()})
    flat.update({f"auroc_{k}": v for k, v in per_type.items() if v is not None})
    flat.update({f"pixel_auroc_{k}": v for k, v in pixel_per_type.items() if v is not None})
    return flat
