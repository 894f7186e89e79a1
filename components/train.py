"""Train: fit GANomaly on the training normals; keep the epoch best on validation.

    ganomaly train --config configs/default.yaml --run default

Reads ``artifacts/<run>/preprocess/`` (the train and val splits).

Writes ``artifacts/<run>/train/``:
- ``model.weights.h5``: the weights of the epoch with the lowest validation
  reconstruction loss (``val_con_loss``, on validation normals only; the
  test split is never looked at).
- ``checkpoints/last.weights.h5``: the latest epoch, rewritten every epoch.
- ``model.json``: the model's ``get_config()``.
- ``history.csv``: losses per epoch (train and ``val_`` ones).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from components.preprocess import read_split
from models.anomalies import corrupt
from models.ganomaly import GANomaly
from pipeline import artifacts
from pipeline.config import Config
from pipeline.errors import PipelineError

SELECTION_METRIC = "val_con_loss"


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's losses and validation metrics to the active MLflow run."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import mlflow  # noqa: PLC0415

        metrics = {key: float(value) for key, value in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch + 1)


def build_model(config: Config) -> GANomaly:
    """The GANomaly that ``config`` describes (weights freshly initialised)."""
    return GANomaly(
        isize=config.preprocess.isize,
        channels=config.preprocess.channels,
        nz=config.model.nz,
        ngf=config.model.ngf,
        ndf=config.model.ndf,
        extra_layers=config.model.extra_layers,
        skip_connections=config.model.skip_connections,
        score_kind=config.score.kind,
        smoothing_sigma=config.score.smoothing_sigma,
        topk_fraction=config.score.topk_fraction,
        pixel_norm=config.score.pixel_norm,
        seed=config.train.seed,
    )


def load_weights(model: GANomaly, path: Path) -> None:
    """Loads saved weights; a file that does not fit the model is a one-line error."""
    # Keras warns about every container it cannot match before it raises; those
    # warnings ("layers will retain their freshly-initialized weights") would only
    # bury the error, so they are held back and shown only if the load succeeds.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except ValueError as error:
            raise PipelineError(
                f"{path}: does not fit this model (saved by another version of the project "
                "or other model settings); run the train stage again"
            ) from error
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _images(preprocess_dir: Path, split: str, batch_size: int, shuffle_seed: int | None):
    """The normal images of a split, batched; shuffled each epoch when seeded."""
    info = json.loads((preprocess_dir / "preprocess.json").read_text())
    normals = info["splits"][split]["normal"]
    data = read_split(preprocess_dir, split).filter(lambda ex: ex["label"] == 0)
    # Known length: Keras then counts steps instead of warning that data ran out.
    data = data.map(lambda ex: ex["image"])
    data = data.apply(tf.data.experimental.assert_cardinality(normals)).cache()
    if shuffle_seed is not None:
        data = data.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment(images):
    # Only flips: the parts' geometry is otherwise fixed by the fixture.
    return tf.image.random_flip_left_right(tf.image.random_flip_up_down(images))


def _with_synthetic_anomalies(train: tf.data.Dataset, t) -> tf.data.Dataset:
    """Batches become ``(corrupted, clean)``: the generator learns to repair."""
    seeds = tf.data.Dataset.random(seed=t.seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(train, seeds).map(
        lambda images, seed: (corrupt(images, t.synthetic_anomalies, seed)[0], images),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def compiled_model(config: Config) -> GANomaly:
    """``build_model`` with the paper's optimizers and loss weights from the config."""
    model, t = build_model(config), config.train
    model.compile(
        g_optimizer=keras.optimizers.Adam(t.lr, beta_1=t.beta1),
        d_optimizer=keras.optimizers.Adam(t.lr, beta_1=t.beta1),
        w_adv=t.w_adv,
        w_con=t.w_con,
        w_enc=t.w_enc,
    )
    return model


def training_data(config: Config, preprocess_dir: Path):
    """``(train, val)`` datasets: shuffled, augmented training normals; validation normals."""
    t = config.train
    train = _images(preprocess_dir, "train", t.batch_size, t.seed)
    if t.augment:
        train = train.map(_augment)
    if t.synthetic_anomalies > 0:
        train = _with_synthetic_anomalies(train, t)
    return train, _images(preprocess_dir, "val", t.batch_size, None)


def _callbacks(out: Path) -> list[keras.callbacks.Callback]:
    (out / "checkpoints").mkdir()
    best = keras.callbacks.ModelCheckpoint(
        str(out / "model.weights.h5"),
        monitor=SELECTION_METRIC,
        mode="min",
        save_best_only=True,
        save_weights_only=True,
    )
    last = keras.callbacks.ModelCheckpoint(
        str(out / "checkpoints" / "last.weights.h5"), save_weights_only=True
    )
    return [best, last, keras.callbacks.CSVLogger(str(out / "history.csv")), MlflowEpochLogger()]


def run(config: Config, run_path: Path) -> None:
    import mlflow  # noqa: PLC0415

    preprocess_dir = artifacts.require_stage(run_path, "preprocess")
    keras.utils.set_random_seed(config.train.seed)
    train, val = training_data(config, preprocess_dir)
    model = compiled_model(config)
    with artifacts.stage_output(run_path, "train") as out:
        start = time.time()
        # shuffle=False: tf.data already reshuffles the training set every epoch.
        history = model.fit(
            train,
            validation_data=val,
            epochs=config.train.epochs,
            callbacks=_callbacks(out),
            shuffle=False,
            verbose=2,
        )
        losses = history.history[SELECTION_METRIC]
        summary = {
            "train_seconds": time.time() - start,
            "best_epoch": losses.index(min(losses)) + 1,
            f"best_{SELECTION_METRIC}": min(losses),
        }
        (out / "model.json").write_text(json.dumps(model.get_config(), indent=2))
        (out / "train.json").write_text(json.dumps(summary, indent=2))
        mlflow.log_metrics(summary)
        mlflow.log_artifact(str(out / "history.csv"), artifact_path="train")
    print(
        f"[train] {config.train.epochs} epochs in {summary['train_seconds']:.0f} s; "
        f"best epoch {summary['best_epoch']}",
        flush=True,
    )
