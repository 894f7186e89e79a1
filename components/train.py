"""Train: fit GANomaly on the training normals; keep the epoch best on validation.

    ganomaly train --config configs/default.yaml --run default

Reads ``artifacts/<run>/preprocess/`` (the train and val splits).

Writes ``artifacts/<run>/train/``:
- ``model.weights.h5``: the weights of the epoch with the lowest validation
  reconstruction loss (``val_con_loss``, on validation normals only; the
  test split is never looked at). With a defect head: the lowest
  ``val_head_loss``, the head's loss on synthetic anomalies pasted onto the
  validation normals with a fixed seed (still no real defect).
- ``synthetic_anomalies.png`` (with ``train.synthetic_anomalies``): each kind of
  synthetic anomaly on a training image, and its mask, for a person to check.
- ``checkpoints/last.weights.h5``: the weights of the last epoch.
- ``model.json``: the model's ``get_config()`` (networks only; scoring is evaluate's).
- ``train.json``: training seconds, the best epoch and its ``val_con_loss``
  (``val_head_loss`` with a defect head).
- ``history.csv``: losses per epoch (train and ``val_`` ones).

While it runs, ``artifacts/<run>/train.partial/`` holds the resumable state
(``components/checkpoints.py``), written every epoch and every
``train.checkpoint_every_steps``: the same command after a crash resumes from
the last checkpoint and ends as a run never interrupted would (op determinism
is on). A non-finite loss stops training (exit 2) or, with ``train.on_nan:
restore``, rolls back to the last checkpoint with halved learning rates.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.python.framework import config as tf_config

from components import distribute
from components.checkpoints import BackgroundSaves, CheckpointStore, IncompatibleCheckpoint
from components.train_data import TrainingData
from models.fused_adam import FusedAdam
from models.ganomaly import GANomaly
from pipeline.core import cluster, modeling, records
from pipeline.core.config import Config
from pipeline.core.errors import PipelineError

SELECTION_METRIC = "val_con_loss"
HEAD_SELECTION_METRIC = "val_head_loss"
GALLERY_FILE = "synthetic_anomalies.png"
# The loss terms, in the order a non-finite one is named (the parts before the sums);
# head_loss only with a defect head.
LOSS_TERMS = ("con_loss", "enc_loss", "adv_loss", "head_loss", "d_loss", "g_loss")
PARTIAL = "train.partial"
# Train settings a checkpoint does not depend on: a run may resume with other values.
RESUMABLE_KEYS = (
    "epochs",
    "patience",
    "checkpoint_every_steps",
    "on_nan",
    "nan_restores",
    "strategy",
    "cache",
    "worker_timeout_s",
)


class NonFiniteLoss(Exception):
    """A loss term of a training step is NaN or infinite."""

    def __init__(self, epoch: int, step: int, term: str, value: float):
        super().__init__(f"non-finite {term} ({value}) at epoch {epoch}, step {step}")
        self.epoch, self.step, self.term, self.value = epoch, step, term, value


def compiled_model(config: Config) -> GANomaly:
    """``build_model`` with the paper's optimizers (loss-scaled under mixed precision).

    Adam's arithmetic in TensorFlow's one-kernel update (``models.fused_adam``).
    """
    model, options = modeling.build_model(config), config.train

    def adam():
        optimizer = FusedAdam(options.lr, beta_1=options.beta1)
        if precision(options) == "float16":  # bfloat16 has float32's range: no scaling
            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    model.compile(
        g_optimizer=adam(),
        d_optimizer=adam(),
        w_adv=options.w_adv,
        w_con=options.w_con,
        w_enc=options.w_enc,
        h_optimizer=adam() if model.head is not None else None,
        label_topk_fraction=config.score.topk_fraction,
    )
    model.build_optimizers()
    return model


def precision(options) -> str | None:
    """``float16``, ``bfloat16`` or None (float32) from ``train.mixed_precision``."""
    value = options.mixed_precision
    return "float16" if value is True else (value or None)


def _say_if_emulated(kind: str, chief: bool) -> None:
    """One line when no unit here computes ``kind`` natively: it will be slower, not faster."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = {"float16": ("avx512_fp16", "amx_fp16"), "bfloat16": ("avx512_bf16", "amx_bf16")}
    if tf.config.list_physical_devices("GPU") or any(f in flags for f in native[kind]):
        return
    if chief:
        print(
            f"[train] train.mixed_precision {kind}: this CPU has no {kind} unit "
            f"({' or '.join(native[kind])}) and no GPU is visible; it is emulated, "
            "slower than float32, and the results differ from float32's",
            flush=True,
        )


def fingerprint(config: Config, preprocess_dir: Path) -> str:
    """What a checkpoint must have been written with to be resumed: settings and data."""
    settings = config.to_dict()
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in RESUMABLE_KEYS}
    picked = {s: settings[s] for s in ("data", "preprocess", "model", "train")}
    picked["preprocess.json"] = records.read_info(preprocess_dir)
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def selection_metric(model: GANomaly) -> str:
    """The validation loss the best epoch is chosen on: the head's when there is one."""
    return SELECTION_METRIC if model.head is None else HEAD_SELECTION_METRIC


def _fresh_state(fp: str, terms: list[str]) -> dict:
    return {
        "fingerprint": fp,
        "epoch": 0,  # epochs finished
        "step": 0,  # steps finished in the current epoch
        "global_step": 0,
        "sums": dict.fromkeys(terms, 0.0),
        "history": [],
        "best": None,
        "best_epoch": 0,
        "best_checkpoint": None,  # the checkpoint that holds the best epoch's weights
        "stale_epochs": 0,
        "lr_scale": 1.0,
        "nan_restores": 0,
        "train_seconds": 0.0,
    }


def schedule_factor(schedule: str, step: int, total_steps: int) -> float:
    """The learning rate's multiplier at ``step`` of ``total_steps``: 1, or a half cosine to 0."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))


def step_function(model: GANomaly, strategy: tf.distribute.Strategy):
    """One distributed training step; returns the step's losses, all replicas reduced.

    Traced per batch shape (an epoch's last, smaller batch once more): a
    signature with an unknown batch size would trace once but ran each step
    about 15% slower here.
    """

    @tf.function
    def step(batch):
        model.reset_metrics()
        strategy.run(model.train_step, args=(batch,))
        return {metric.name: metric.result() for metric in model.metrics}

    return step


class Trainer:
    """One run of the train stage: the loop, its checkpoints and its records.

    Args:
        config: the run's config.
        preprocess_dir: the preprocess stage's folder.
        chief: whether this process writes checkpoints, output and MLflow records.
    """

    def __init__(self, config: Config, preprocess_dir: Path, chief: bool):
        self.config, self.options, self.chief = config, config.train, chief
        self.strategy = distribute.make_strategy(config)
        tf_config.enable_op_determinism()
        keras.utils.set_random_seed(self.options.seed)
        if precision(self.options):
            keras.mixed_precision.set_global_policy(f"mixed_{precision(self.options)}")
            _say_if_emulated(precision(self.options), self.chief)
        with self.strategy.scope():
            self.model = compiled_model(config)
        self.data = TrainingData(config, preprocess_dir, self.strategy.num_replicas_in_sync)
        self.store = CheckpointStore(Path(preprocess_dir).parent / PARTIAL)
        self.saves = BackgroundSaves(self.store)
        self.fingerprint = fingerprint(config, preprocess_dir)
        tracked = {metric.name for metric in self.model.metrics}
        self.loss_terms = [term for term in LOSS_TERMS if term in tracked]
        self.selection_metric = selection_metric(self.model)
        self.state = _fresh_state(self.fingerprint, [*self.loss_terms, "d_reinit"])
        self.watchdog = distribute.Watchdog(config)
        self._step = step_function(self.model, self.strategy)
        self._val_step = tf.function(self.model.evaluation_losses)
        self._rate = self.options.lr  # the optimizers' learning rate as compiled

    # -- checkpoints ---------------------------------------------------------------

    def _arrays(self) -> list[np.ndarray]:
        return [np.array(keras.ops.convert_to_numpy(v)) for v in self.model.training_state]

    def _assign(self, arrays: list[np.ndarray]) -> None:
        for variable, value in zip(self.model.training_state, arrays):
            variable.assign(value)

    def checkpoint(self) -> None:
        """The chief writes the state atomically, in the background; the other workers nothing."""
        if self.chief:
            self.saves.save(self._arrays(), copy.deepcopy(self.state))

    def _shapes(self) -> list[tuple]:
        return [tuple(v.shape) for v in self.model.training_state]

    def resume(self) -> None:
        """Restores the newest good checkpoint, or starts afresh; says which in one line."""
        try:
            loaded = self.store.latest(self._shapes(), self.fingerprint)
        except IncompatibleCheckpoint as err:
            print(
                f"[train] {err.path.parent}: checkpoint written with other model, data or "
                "training settings; starting afresh",
                flush=True,
            )
            if self.chief:
                self.store.clear()
            loaded = None
        if loaded is None:
            if self.store.checkpoints():  # there were some, and none reads back whole
                print(f"[train] {self.store.root}: every checkpoint is damaged; starting afresh")
            self.checkpoint()  # step 0: a good state to roll back to
            return
        self._load(loaded.path, loaded.state)
        damaged = ""
        if loaded.skipped:
            damaged = f"{', '.join(loaded.skipped)} damaged (truncated or unreadable); "
        print(
            f"[train] {damaged}resuming from {loaded.path} (epoch {self.state['epoch'] + 1}, "
            f"step {self.state['step']} done)",
            flush=True,
        )

    def _load(self, path: Path, state: dict) -> None:
        self._assign(state.pop("_arrays"))
        state.pop("variables_sha256", None)
        self.state = state
        self._rate = None  # the restored optimizers may hold another rate: set it again

    # -- the loop ------------------------------------------------------------------

    def train(self) -> None:
        """Trains to the last epoch (or early stop); rolls back on a non-finite loss."""
        with self.watchdog:
            self.resume()
            while True:
                try:
                    self._epochs()
                    self.saves.wait()
                    return
                except NonFiniteLoss as err:
                    self._after_non_finite(err)
                except distribute.PEER_ERRORS as err:
                    if not cluster.is_distributed(self.config):
                        raise
                    raise distribute.peer_failure(err) from None

    def _stopped_early(self) -> bool:
        patience = self.options.patience
        return bool(patience) and self.state["stale_epochs"] >= patience

    def _epochs(self) -> None:
        while self.state["epoch"] < self.options.epochs and not self._stopped_early():
            started = time.perf_counter()
            images = self._train_one_epoch()
            self._end_epoch(images, time.perf_counter() - started)
        if self._stopped_early():
            print(
                f"[train] early stop after epoch {self.state['epoch']}: {self.selection_metric} "
                f"no better for {self.options.patience} epochs (train.patience)",
                flush=True,
            )

    def _train_one_epoch(self) -> int:
        """Runs the rest of the current epoch's steps; returns the images it trained on."""
        state, every = self.state, self.options.checkpoint_every_steps
        epoch_data = self.data.epoch(state["epoch"], skip=state["step"])
        steps = 0
        for batch in self.strategy.experimental_distribute_dataset(epoch_data):
            self._set_learning_rate()
            values = {k: float(v) for k, v in self._step(batch).items()}
            self._check_finite(values)
            for name in state["sums"]:
                state["sums"][name] += values[name]
            state["step"] += 1
            state["global_step"] += 1
            steps += 1
            self.watchdog.alive()
            if every and state["global_step"] % every == 0:
                self.checkpoint()
        return min(steps * self.options.batch_size, self.data.count)

    def _set_learning_rate(self) -> None:
        """Sets the step's rate: ``lr``, halved per NaN restore, along ``train.lr_schedule``."""
        total = self.options.epochs * self.data.steps_per_epoch
        rate = self.options.lr * self.state["lr_scale"]
        rate *= schedule_factor(self.options.lr_schedule, self.state["global_step"], total)
        if rate != self._rate:  # the constant schedule never writes it: runs stay bit for bit
            for optimizer in self.model.optimizers:
                optimizer.learning_rate.assign(rate)
            self._rate = rate

    def _check_finite(self, values: dict) -> None:
        for term in self.loss_terms:
            if not math.isfinite(values[term]):
                raise NonFiniteLoss(
                    self.state["epoch"] + 1, self.state["step"] + 1, term, values[term]
                )

    def validate(self) -> dict:
        """The loss terms on the validation normals, averaged over images."""
        totals, count = dict.fromkeys(self.loss_terms, 0.0), 0
        for batch in self.data.val:
            size = int(tf.nest.flatten(batch)[0].shape[0])
            for name, value in self._val_step(batch).items():
                totals[name] += float(value) * size
            count += size
        self.watchdog.alive()
        return {f"val_{name}": total / max(count, 1) for name, total in totals.items()}

    def _end_epoch(self, images: int, seconds: float) -> None:
        state = self.state
        steps = max(state["step"], 1)
        row = {name: total / steps for name, total in state["sums"].items()}
        row["d_reinit"] = state["sums"]["d_reinit"]
        row.update(self.validate())
        state["history"].append(row)
        self._keep_best(row)
        state.update(epoch=state["epoch"] + 1, step=0)
        state["sums"] = dict.fromkeys(state["sums"], 0.0)
        state["train_seconds"] += seconds
        self.checkpoint()
        self._report(row, images / max(seconds, 1e-9))

    def _keep_best(self, row: dict) -> None:
        """Marks this epoch best when it is; its end-of-epoch checkpoint keeps the weights."""
        state = self.state
        if state["best"] is not None and not row[self.selection_metric] < state["best"]:
            state["stale_epochs"] += 1
            return
        state.update(
            best=row[self.selection_metric],
            best_epoch=state["epoch"] + 1,
            best_checkpoint=self.store.name(state["global_step"]),
            stale_epochs=0,
        )

    def save_best_weights(self, path: Path) -> None:
        """Writes the best epoch's weights as a Keras weights file; the model keeps them."""
        self.saves.wait()
        try:
            best = self.store.arrays(self.state["best_checkpoint"], self._shapes())
        except OSError as err:
            raise PipelineError(
                f"train: {err}; it holds the best epoch's weights: delete {self.store.root} "
                "and train again"
            ) from None
        self._assign(best)
        self.model.save_weights(str(path))

    def _report(self, row: dict, images_per_s: float) -> None:
        epoch = self.state["epoch"]
        print(
            f"[train] epoch {epoch}/{self.options.epochs}: g_loss {row['g_loss']:.4f} "
            f"d_loss {row['d_loss']:.4f} {self.selection_metric} {row[self.selection_metric]:.4f}",
            flush=True,
        )
        if self.chief:
            _log_metrics({**row, "train_images_per_s": images_per_s}, step=epoch)

    # -- non-finite losses ---------------------------------------------------------

    def _after_non_finite(self, err: NonFiniteLoss) -> None:
        """Stops (``train.on_nan: stop``) or rolls back with halved learning rates."""
        restores = self.state["nan_restores"]
        if self.options.on_nan == "stop" or restores >= self.options.nan_restores:
            raise PipelineError(self._stop_message(err, restores)) from None
        self.saves.wait()
        loaded = self.store.latest(self._shapes(), self.fingerprint)
        lr_scale = self.state["lr_scale"] / 2
        self._load(loaded.path, loaded.state)
        self.state.update(lr_scale=lr_scale, nan_restores=restores + 1)
        self._set_learning_rate()
        print(
            f"[train] {err}: rolled back to {loaded.path.name} (epoch {self.state['epoch'] + 1}, "
            f"step {self.state['step']} done), learning rates halved to "
            f"{self._rate:g} (restore {restores + 1} of "  # the rate set: schedule included
            f"{self.options.nan_restores}, train.on_nan: restore)",
            flush=True,
        )

    def _stop_message(self, err: NonFiniteLoss, restores: int) -> str:
        self.saves.wait()
        checkpoints = self.store.checkpoints()
        last = checkpoints[0] if checkpoints else "none"
        best = "none yet"
        if self.chief and self.state["best_checkpoint"] is not None:
            self.save_best_weights(self.store.best_weights)
            best = self.store.best_weights
        why = (
            "train.on_nan: stop"
            if self.options.on_nan == "stop"
            else f"after {restores} restores, train.nan_restores"
        )
        return (
            f"train: {err}; stopped ({why}); kept the last good checkpoint {last} "
            f"and the best model {best}"
        )

    # -- output --------------------------------------------------------------------

    def write_output(self, out: Path) -> dict:
        """Writes the stage's files into ``out``; returns the summary (``train.json``)."""
        state = self.state
        (out / "checkpoints").mkdir()
        self.model.save_weights(str(out / "checkpoints" / "last.weights.h5"))
        self.save_best_weights(out / modeling.WEIGHTS_FILE)
        _write_history(out / "history.csv", state["history"])
        summary = {
            "train_seconds": state["train_seconds"],
            "best_epoch": state["best_epoch"],
            f"best_{self.selection_metric}": state["best"],
            "epochs_run": state["epoch"],
            "training_examples": self.data.count,  # images, or their tiles
            "steps_per_epoch": self.data.steps_per_epoch,
            "stopped_early": self._stopped_early(),
            "nan_restores": state["nan_restores"],
            "labelled_defects": self.data.labelled_types(),
        }
        (out / "model.json").write_text(json.dumps(self.model.get_config(), indent=2))
        if self.options.synthetic_anomalies > 0:
            picture = self.data.gallery()
            Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(
                out / GALLERY_FILE
            )
        (out / "train.json").write_text(json.dumps(summary, indent=2))
        return summary


def _write_history(path: Path, history: list[dict]) -> None:
    keys = sorted(history[0]) if history else []
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch, row in enumerate(history):
            writer.writerow([epoch, *(repr(row[k]) for k in keys)])


def _log_metrics(metrics: dict, step: int | None = None) -> bool:
    """Logs into the stage's MLflow run; outside one (a test, a notebook) logs nothing."""
    import mlflow  # noqa: PLC0415

    if mlflow.active_run() is None:
        return False
    mlflow.log_metrics(metrics, step=step)
    return True


def _reset_global_settings(determinism_was_on: bool) -> None:
    """Leaves the process as training found it (tests run several stages in one)."""
    keras.mixed_precision.set_global_policy("float32")
    if not determinism_was_on:
        tf_config.disable_op_determinism()


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Trains on the preprocess stage's normals; the chief writes the best weights into ``out``."""
    chief = cluster.is_chief(config)
    determinism_was_on = tf_config.is_op_determinism_enabled()
    try:
        trainer = Trainer(config, inputs["preprocess"], chief)
        trainer.train()
    finally:
        _reset_global_settings(determinism_was_on)
    if not chief:
        print("[train] done; worker output discarded (the chief writes the model)", flush=True)
        return
    summary = trainer.write_output(out)
    numbers = {k: float(v) for k, v in summary.items() if not isinstance(v, dict)}
    numbers["labelled_defects"] = float(
        sum(c["images"] for c in summary["labelled_defects"].values())
    )
    if _log_metrics(numbers):
        import mlflow  # noqa: PLC0415

        mlflow.log_artifact(str(out / "history.csv"), artifact_path="train")
    print(
        f"[train] {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s; "
        f"best epoch {summary['best_epoch']}",
        flush=True,
    )


def after_success(run_path: Path) -> None:
    """Deletes the resumable state once the stage's output is in place."""
    CheckpointStore(Path(run_path) / PARTIAL).clear()
