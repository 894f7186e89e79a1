"""Train: fit GANomaly on the training normals; keep the epoch best on validation.

    ganomaly train --config configs/default.yaml --run default

Reads ``artifacts/<run>/preprocess/`` (the train and val splits).

Writes ``artifacts/<run>/train/``:
- ``model.weights.h5``: the weights of the epoch with the lowest validation
  reconstruction loss (``val_con_loss``, on validation normals only; the
  test split is never looked at).
- ``checkpoints/last.weights.h5``: the latest epoch, rewritten every epoch.
- ``model.json``: the model's ``get_config()`` (networks only; scoring is evaluate's).
- ``train.json``: training seconds, the best epoch and its ``val_con_loss``.
- ``history.csv``: losses per epoch (train and ``val_`` ones).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from models.anomalies import corrupt
from models.ganomaly import GANomaly
from pipeline.core import modeling, records
from pipeline.core.config import Config, TrainConfig

SELECTION_METRIC = "val_con_loss"


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's losses, validation metrics and training images/s to MLflow.

    Args:
        train_images: training images per epoch (for ``train_images_per_s``).
    """

    def __init__(self, train_images: int):
        super().__init__()
        self.train_images = train_images
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import mlflow  # noqa: PLC0415

        # Includes the validation pass: what a user waits for per epoch.
        seconds = max(time.perf_counter() - self._started, 1e-9)
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        metrics["train_images_per_s"] = self.train_images / seconds
        mlflow.log_metrics(metrics, step=epoch + 1)


def _images(preprocess_dir: Path, split: str, batch_size: int, shuffle_seed: int | None):
    """The normal images of a split, batched; shuffled each epoch when seeded."""
    data = records.normal_images(preprocess_dir, split).cache()
    if shuffle_seed is not None:
        data = data.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment(images):
    # Only flips: the parts' geometry is otherwise fixed by the fixture.
    return tf.image.random_flip_left_right(tf.image.random_flip_up_down(images))


def _with_synthetic_anomalies(train: tf.data.Dataset, options: TrainConfig) -> tf.data.Dataset:
    """Batches become ``(corrupted, clean)``: the generator learns to repair."""
    seeds = tf.data.Dataset.random(seed=options.seed, rerandomize_each_iteration=True).batch(2)
    share = options.synthetic_anomalies
    return tf.data.Dataset.zip(train, seeds).map(
        lambda images, seed: (corrupt(images, share, seed)[0], images),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def compiled_model(config: Config) -> GANomaly:
    """``build_model`` with the paper's optimizers and loss weights from the config."""
    model, options = modeling.build_model(config), config.train
    model.compile(
        g_optimizer=keras.optimizers.Adam(options.lr, beta_1=options.beta1),
        d_optimizer=keras.optimizers.Adam(options.lr, beta_1=options.beta1),
        w_adv=options.w_adv,
        w_con=options.w_con,
        w_enc=options.w_enc,
    )
    return model


def training_data(config: Config, preprocess_dir: Path):
    """``(train, val)`` datasets: shuffled, augmented training normals; validation normals."""
    options = config.train
    train = _images(preprocess_dir, "train", options.batch_size, options.seed)
    if options.augment:
        train = train.map(_augment)
    if options.synthetic_anomalies > 0:
        train = _with_synthetic_anomalies(train, options)
    return train, _images(preprocess_dir, "val", options.batch_size, None)


def _callbacks(out: Path, train_images: int) -> list[keras.callbacks.Callback]:
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
    history = keras.callbacks.CSVLogger(str(out / "history.csv"))
    return [best, last, history, MlflowEpochLogger(train_images)]


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Trains on the preprocess stage's normals; writes the best weights into ``out``."""
    import mlflow  # noqa: PLC0415

    keras.utils.set_random_seed(config.train.seed)
    train, val = training_data(config, inputs["preprocess"])
    model = compiled_model(config)
    train_images = records.read_info(inputs["preprocess"])["splits"]["train"]["normal"]
    start = time.time()
    # shuffle=False: tf.data already reshuffles the training set every epoch.
    history = model.fit(
        train,
        validation_data=val,
        epochs=config.train.epochs,
        callbacks=_callbacks(out, train_images),
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
