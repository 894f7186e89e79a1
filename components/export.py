"""Export: a SavedModel for TensorFlow Serving, running the training preprocessing.

    ganomaly export --config configs/default.yaml --run default
    saved_model_cli show --dir artifacts/default/export/ganomaly/1 --all

Reads ``artifacts/<run>/evaluate/`` (calibrated weights, threshold) and
``artifacts/<run>/preprocess/preprocess.json`` (the preprocessing spec).

Writes ``artifacts/<run>/export/<model_name>/<version>/``, TF Serving's
layout, with two signatures:
- ``serving_default``: ``images`` float32 ``[None, H, W, C]`` with pixel
  values in [0, 255] (any H, W; one size per request) -> ``score`` [None],
  ``is_anomaly`` bool [None], ``anomaly_map`` [None, isize, isize].
- ``serving_bytes``: ``encoded`` string ``[None]`` of PNG/JPEG/BMP files ->
  the same outputs.
Both run ``models.preprocessing.preprocess`` with the spec used in training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from components.train import build_model, load_weights
from models.preprocessing import decode, preprocess
from pipeline import artifacts
from pipeline.config import Config


def build_archive(model, spec: dict, threshold: float):
    """The model with its preprocessing and threshold, as serving endpoints.

    Returns:
        ``(archive, serving_default function)``.
    """
    channels = spec["channels"]
    threshold = tf.constant(threshold, tf.float32)

    def outputs(raw_images):
        images, roi = preprocess(raw_images, spec)
        scored = model.score(images)
        return {
            "score": scored["score"],
            "is_anomaly": scored["score"] >= threshold,
            "anomaly_map": scored["anomaly_map"] * roi[..., 0],
        }

    def from_bytes(encoded):
        images = tf.map_fn(
            lambda e: decode(e, channels),
            encoded,
            fn_output_signature=tf.TensorSpec([None, None, channels], tf.float32),
        )
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = archive.add_endpoint(
        "serving_default",
        outputs,
        input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name="images")],
    )
    archive.add_endpoint(
        "serving_bytes",
        from_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="encoded")],
    )
    return archive, serve


def run(config: Config, run_path: Path) -> None:
    import mlflow  # noqa: PLC0415

    evaluate_dir = artifacts.require_stage(run_path, "evaluate")
    preprocess_dir = artifacts.require_stage(run_path, "preprocess")
    spec = json.loads((preprocess_dir / "preprocess.json").read_text())["spec"]
    scoring = json.loads((evaluate_dir / "scoring.json").read_text())
    model = build_model(config)
    load_weights(model, evaluate_dir / "model.weights.h5")
    archive, serve = build_archive(model, spec, scoring["threshold"])
    name, version = config.export.model_name, str(config.export.version)
    with artifacts.stage_output(run_path, "export") as out:
        target = out / name / version
        archive.write_out(str(target), verbose=False)
        # Sanity check before anything is moved into place: the reloaded
        # model must agree with the in-memory one.
        probe = np.random.default_rng(0).uniform(0, 255, (2, 48, 40, spec["channels"]))
        probe = probe.astype(np.float32)
        expected = serve(tf.constant(probe))["score"].numpy()
        reloaded = tf.saved_model.load(str(target)).signatures["serving_default"]
        got = reloaded(images=tf.constant(probe))["score"].numpy()
        if not np.allclose(expected, got, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"reloaded SavedModel disagrees: {expected} vs {got}")
        shutil.copy(evaluate_dir / "scoring.json", out / "scoring.json")
        mlflow.log_artifacts(str(out / name), artifact_path=f"export/{name}")
    print(f"[export] SavedModel at {run_path / 'export' / name / version}", flush=True)
