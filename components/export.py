"""Export: a SavedModel for TensorFlow Serving, running the training preprocessing.

    ganomaly export --config configs/default.yaml --run default
    saved_model_cli show --dir artifacts/default/export/ganomaly/1 --all

Reads ``artifacts/<run>/train/model.weights.h5`` (the networks),
``artifacts/<run>/evaluate/`` (``score_statistics.npz`` and the thresholds in
``scoring.json``) and ``artifacts/<run>/preprocess/preprocess.json`` (the
preprocessing spec).

Writes ``artifacts/<run>/export/``: ``scoring.json`` (a copy of evaluate's) and
``<model_name>/<version>/``, TF Serving's layout, with two signatures:
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

from models.preprocessing import decode, preprocess
from pipeline.core import modeling, records
from pipeline.core.config import Config


def build_archive(scorer, spec: dict, threshold: float):
    """The scorer with its preprocessing and threshold, as serving endpoints.

    Returns:
        ``(archive, serving_default function)``.
    """
    channels = spec["channels"]
    threshold = tf.constant(threshold, tf.float32)

    def outputs(raw_images):
        images, roi = preprocess(raw_images, spec)
        scored = scorer.score(images)
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
    archive.track(scorer)
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


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Writes the SavedModel of the trained, calibrated scorer into ``out``."""
    import mlflow  # noqa: PLC0415

    spec = records.read_info(inputs["preprocess"])["spec"]
    scoring = json.loads((inputs["evaluate"] / "scoring.json").read_text())
    scorer = modeling.load_scorer(config, inputs["train"], inputs["evaluate"])
    archive, serve = build_archive(scorer, spec, scoring["threshold"])
    name, version = config.export.model_name, str(config.export.version)
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
    shutil.copy(inputs["evaluate"] / "scoring.json", out / "scoring.json")
    mlflow.log_artifacts(str(out / name), artifact_path=f"export/{name}")
    print(f"[export] SavedModel {name}/{version} ({saved_size_mb(target):.1f} MB)", flush=True)


def saved_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
