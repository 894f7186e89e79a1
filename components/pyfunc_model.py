"""The exported SavedModel as an MLflow pyfunc model, registered in the Model Registry.

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/ganomaly/1")
    model.predict(pd.DataFrame({"image": [open("part.png", "rb").read()]}))
    # -> DataFrame: score, is_anomaly (one row per image, the served model's decisions)

The wrapper only feeds the SavedModel's ``serving_bytes`` signature, so the Registry
scores exactly as TF Serving does. MLflow stores this file with the model (models from
code), so loading it needs TensorFlow and pandas, not this project.
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path

import mlflow
import pandas as pd

IMAGE_COLUMN = "image"
_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "pandas"]


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame whose ``image`` column holds encoded files (bytes or base64)."""

    def load_context(self, context):
        import tensorflow as tf  # noqa: PLC0415 - only when the model is loaded

        self._tf = tf
        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._serve = self._model.signatures["serving_bytes"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        files = [_as_bytes(value) for value in model_input[IMAGE_COLUMN]]
        out = self._serve(encoded=self._tf.constant(files, dtype=self._tf.string))
        return pd.DataFrame(
            {"score": out["score"].numpy(), "is_anomaly": out["is_anomaly"].numpy()}
        )


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return base64.b64decode(value)


def log_and_register(version_dir: Path, card: dict) -> str:
    """Logs the SavedModel into the active run and registers it; returns the Registry version.

    The Registry version is tagged with the served thresholds, the export version
    and the test metrics.
    """
    from mlflow.models import ModelSignature  # noqa: PLC0415
    from mlflow.types import ColSpec, Schema  # noqa: PLC0415

    name = card["model_name"]
    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
        outputs=Schema([ColSpec("float", "score"), ColSpec("boolean", "is_anomaly")]),
    )
    with warnings.catch_warnings():
        # Its advice to add an input example: one would make every export load and run
        # the SavedModel once more; the signature above already says what goes in.
        warnings.filterwarnings("ignore", message=".*input_example.*", category=UserWarning)
        info = _log_model(name, version_dir, card, signature)
    version = str(info.registered_model_version)
    client = mlflow.tracking.MlflowClient()
    tags = {
        "threshold": card["threshold"],
        "pixel_threshold": card["pixel_threshold"],
        "export_version": card["version"],
        "score_kind": card["score"]["kind"],
        **{k: v for k, v in card["test_metrics"].items() if isinstance(v, (int, float))},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    return version


def _log_model(name: str, version_dir: Path, card: dict, signature):
    return mlflow.pyfunc.log_model(
        name=f"{name}-v{card['version']}",
        python_model=Path(__file__),
        artifacts={"saved_model": str(version_dir)},
        pip_requirements=_REQUIREMENTS,
        signature=signature,
        registered_model_name=name,
    )


mlflow.models.set_model(SavedModelPyfunc())
