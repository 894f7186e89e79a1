"""Evaluate: calibrate the scores on validation, set the threshold there, score the test split.

    ganomaly evaluate --config configs/default.yaml --run default

Reads ``artifacts/<run>/preprocess/`` and ``artifacts/<run>/train/model.weights.h5``.

Writes ``artifacts/<run>/evaluate/``:
- ``metrics.json``: image_auroc, image_ap, f1, precision, recall, threshold,
  confusion_matrix {tn, fp, fn, tp}, pixel_auroc, aupro (null without
  masks), n_test_normal, n_test_abnormal, plus f1_oracle (best F1 on the
  test set itself, for comparison with published figures only).
- ``auroc_per_defect_type.json``: each defect type against the test normals.
- ``pixel_auroc_per_defect_type.json``: the same per type for pixels (empty without masks).
- ``scores.csv``: per test image its scores and decision.
- ``model.weights.h5`` and ``scoring.json``: the weights with the score
  standardisation frozen in, the threshold and the statistics (export uses them).
- ``report.md``, ``roc.png``, ``score_histogram.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from keras import ops

from components import evaluation_report, localize
from components.preprocess import read_split
from components.train import build_model, load_weights
from models import metrics
from pipeline import artifacts
from pipeline.config import Config
from pipeline.errors import PipelineError

BATCH_SIZE = 64


def score_split(model, preprocess_dir: Path, split: str) -> dict:
    """Runs the model over one split; returns numpy arrays of scores, maps and labels."""
    columns: dict[str, list] = {
        k: []
        for k in (
            "score",
            "latent",
            "map_score",
            "anomaly_map",
            "mask",
            "roi",
            "label",
            "defect_type",
            "path",
        )
    }
    for batch in read_split(preprocess_dir, split).batch(BATCH_SIZE):
        out = model.score(batch["image"])
        for key in ("score", "latent", "map_score", "anomaly_map"):
            columns[key].append(ops.convert_to_numpy(out[key]))
        for key in ("mask", "roi", "label"):
            columns[key].append(batch[key].numpy())
        columns["defect_type"] += [v.decode() for v in batch["defect_type"].numpy()]
        columns["path"] += [v.decode() for v in batch["path"].numpy()]
    return {
        key: np.concatenate(value) if key not in ("defect_type", "path") else np.array(value)
        for key, value in columns.items()
    }


def choose_threshold(config: Config, val: dict) -> tuple[float, str]:
    """The decision threshold from the validation split only; returns (value, how)."""
    method = config.threshold.method
    if method == "fixed":
        return config.threshold.value, "fixed"
    if method == "f1":
        if not (val["label"] == 1).any():
            raise PipelineError(
                "threshold.method f1 needs defective validation images: "
                "set data.val_abnormal_fraction > 0, or use threshold.method quantile"
            )
        threshold, _ = metrics.best_f1_threshold(val["label"], val["score"])
        return threshold, "best F1 on validation"
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


def evaluate_model(model, config: Config, preprocess_dir: Path) -> dict:
    """Calibrates on validation normals, thresholds on validation, scores test.

    Returns:
        ``result`` (metrics.json), ``per_type``, ``how`` (the threshold's
        origin), ``stats``, ``map_threshold``, ``val`` and ``test`` (arrays).
    """
    val_normals = read_split(preprocess_dir, "val").filter(lambda ex: ex["label"] == 0)
    stats = model.calibrate(val_normals.map(lambda ex: ex["image"]).batch(BATCH_SIZE))
    val = score_split(model, preprocess_dir, "val")
    threshold, how = choose_threshold(config, val)
    test = score_split(model, preprocess_dir, "test")
    result, per_type = image_metrics(test, threshold)
    result.update(pixel_metrics(test))
    result["n_test_normal"] = int((test["label"] == 0).sum())
    result["n_test_abnormal"] = int((test["label"] == 1).sum())
    normal = val["label"] == 0
    map_threshold = localize.map_threshold(
        val["anomaly_map"][normal], config.evaluate.map_quantile, roi=val["roi"][normal]
    )
    return {
        "result": result,
        "per_type": per_type,
        "how": how,
        "stats": stats,
        "map_threshold": map_threshold,
        "val": val,
        "test": test,
    }


def _write_scores(test: dict, threshold: float, path: Path) -> None:
    columns = ("path", "label", "defect_type", "score", "latent", "map_score")
    frame = pd.DataFrame({key: test[key] for key in columns})
    frame["is_anomaly"] = (test["score"] >= threshold).astype(int)
    frame.to_csv(path, index=False)


def run(config: Config, run_path: Path) -> None:
    import mlflow  # noqa: PLC0415

    preprocess_dir = artifacts.require_stage(run_path, "preprocess")
    model = build_model(config)
    load_weights(model, artifacts.require_stage(run_path, "train") / "model.weights.h5")
    ev = evaluate_model(model, config, preprocess_dir)
    result, test, map_threshold = ev["result"], ev["test"], ev["map_threshold"]
    pixel_per_type = pixel_auroc_per_type(test)
    regions = localize.localize(
        test, map_threshold, config.evaluate, resize=config.preprocess.resize
    )
    manifest = pd.read_csv(run_path / "ingest" / "manifest.csv", keep_default_na=False)
    with artifacts.stage_output(run_path, "evaluate") as out:
        model.save_weights(str(out / "model.weights.h5"))
        scoring = {
            "threshold": result["threshold"],
            "map_threshold": map_threshold,
            "threshold_method": ev["how"],
            "score_kind": config.score.kind,
            "stats": ev["stats"],
        }
        (out / "scoring.json").write_text(json.dumps(scoring, indent=2))
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        (out / "auroc_per_defect_type.json").write_text(json.dumps(ev["per_type"], indent=2))
        (out / "pixel_auroc_per_defect_type.json").write_text(json.dumps(pixel_per_type, indent=2))
        _write_scores(test, result["threshold"], out / "scores.csv")
        evaluation_report.write(
            {**result, "map_threshold": map_threshold},
            ev["per_type"],
            ev["how"],
            test,
            out,
            regions,
            gallery_size=config.evaluate.gallery_size,
            mask_paths=dict(zip(manifest["path"], manifest["mask_path"])),
            resize=config.preprocess.resize,
            pixel_per_type=pixel_per_type,
        )
        mlflow.log_metrics(_loggable(result, ev["per_type"], pixel_per_type))
        mlflow.log_artifacts(str(out), artifact_path="evaluate")
    print(
        f"[evaluate] image AUROC {result['image_auroc']}, F1 {result['f1']:.3f} at threshold "
        f"{result['threshold']:.3f} ({ev['how']})",
        flush=True,
    )


def _loggable(result: dict, per_type: dict, pixel_per_type: dict) -> dict[str, float]:
    """Flattens metrics.json and the per-type AUROCs into MLflow metrics (nulls left out)."""
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
    flat.update({f"cm_{k}": v for k, v in result["confusion_matrix"].items()})
    flat.update({f"auroc_{k}": v for k, v in per_type.items() if v is not None})
    flat.update({f"pixel_auroc_{k}": v for k, v in pixel_per_type.items() if v is not None})
    return flat
