"""The train stage survives crashes: checkpoints, kill -9 and resume, NaN, determinism, patience.

Real training on the tiny data, real TFRecords, a real MLflow store; the kill
test kills a real `ganomaly train` process with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import checkpoints, train
from pipeline import cli
from pipeline.core import artifacts, records
from pipeline.core.config import load_config
from tests.conftest import train_run

REPO = Path(__file__).resolve().parent.parent


def _config(config_file: Path, *overrides: str):
    return load_config(config_file, list(overrides))


def _train_in_process(config, run_path: Path) -> Path:
    """``train.run`` into ``run_path/out``, leaving ``train.partial`` as a crash would."""
    out = run_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    train.run(config, {"preprocess": run_path / "preprocess"}, out)
    return out


def _weights(path: Path) -> list[np.ndarray]:
    import h5py

    arrays = []
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                arrays.append(np.array(item)) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def _same_weights(a: Path, b: Path) -> bool:
    left, right = _weights(a), _weights(b)
    return len(left) == len(right) > 0 and all(np.array_equal(x, y) for x, y in zip(left, right))


def _train_summary(out: Path) -> dict:
    import json

    summary = json.loads((out / "train.json").read_text())
    summary.pop("train_seconds")
    return summary


@pytest.fixture(scope="module")
def one_epoch(tiny_preprocessed):
    """A run stopped after one epoch with a checkpoint every step (two kept)."""
    config_file, root = tiny_preprocessed
    run_path = train_run(root, "one-epoch")
    config = _config(config_file, "train.epochs=1", "train.checkpoint_every_steps=1")
    _train_in_process(config, run_path)
    return run_path


@pytest.mark.slow  # two trainings and more, over 20 s
def test_same_seed_gives_the_same_losses_and_weights_bit_for_bit(tiny_preprocessed):
    config_file, root = tiny_preprocessed
    config = _config(config_file, "train.epochs=1")
    first = _train_in_process(config, train_run(root, "det-1"))
    second = _train_in_process(config, train_run(root, "det-2"))
    assert (first / "history.csv").read_text() == (second / "history.csv").read_text()
    assert _same_weights(first / "model.weights.h5", second / "model.weights.h5")
    assert _same_weights(
        first / "checkpoints" / "last.weights.h5", second / "checkpoints" / "last.weights.h5"
    )


@pytest.mark.slow  # two trainings and more, over 20 s
def test_truncated_newest_checkpoint_falls_back_to_the_previous_and_says_so(
    tiny_preprocessed, one_epoch, capsys
):
    config_file, root = tiny_preprocessed
    run_path = root / "truncated"
    shutil.rmtree(run_path, ignore_errors=True)
    shutil.copytree(one_epoch, run_path)
    store = checkpoints.CheckpointStore(run_path / train.PARTIAL)
    newest, previous = store.checkpoints()
    data = (newest / checkpoints.VARIABLES).read_bytes()
    (newest / checkpoints.VARIABLES).write_bytes(data[: len(data) // 2])
    capsys.readouterr()

    config = _config(config_file, "train.epochs=2", "train.checkpoint_every_steps=1")
    resumed = _train_in_process(config, run_path)

    lines = [line for line in capsys.readouterr().out.splitlines() if "resuming" in line]
    assert len(lines) == 1, lines
    assert f"{newest.name} damaged" in lines[0] and f"resuming from {previous}" in lines[0]
    reference = _train_in_process(config, train_run(root, "truncated-reference"))
    assert (resumed / "history.csv").read_text() == (reference / "history.csv").read_text()
    assert _same_weights(resumed / "model.weights.h5", reference / "model.weights.h5")


def test_incompatible_checkpoint_starts_afresh_in_one_line(tiny_preprocessed, one_epoch, capsys):
    config_file, root = tiny_preprocessed
    run_path = root / "incompatible"
    shutil.rmtree(run_path, ignore_errors=True)
    shutil.copytree(one_epoch, run_path)
    capsys.readouterr()

    out = _train_in_process(_config(config_file, "train.epochs=1", "train.lr=0.001"), run_path)

    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if "starting afresh" in line]
    assert len(lines) == 1 and "other model, data or training settings" in lines[0]
    assert "resuming" not in printed
    assert len((out / "history.csv").read_text().splitlines()) == 2  # header and one epoch


def _poison_one_training_image(preprocess_dir: Path) -> None:
    """Rewrites the train shards with one normal image's first pixel NaN (a bad record)."""
    info = records.read_info(preprocess_dir)
    for name in info["splits"]["train"]["shards"]:
        path = preprocess_dir / name
        examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
        image = examples[0].features.feature["image"].bytes_list
        pixels = np.frombuffer(image.value[0], np.float32).copy()
        pixels[0] = np.nan
        image.value[0] = pixels.tobytes()
        with tf.io.TFRecordWriter(str(path)) as writer:
            for example in examples:
                writer.write(example.SerializeToString())
        return


def _cli_train(monkeypatch, root: Path, config_file: Path, run: str, *overrides: str) -> int:
    monkeypatch.setattr(artifacts, "ARTIFACTS_ROOT", root)
    sets = [arg for o in overrides for arg in ("--set", o)]
    return cli.main(["train", "--config", str(config_file), "--run", run, *sets])


def test_non_finite_loss_stops_in_one_line_keeping_the_last_checkpoint_and_best_model(
    tiny_preprocessed, one_epoch, monkeypatch, capsys
):
    # One good epoch, then a record of the training data goes bad (a NaN pixel).
    config_file, root = tiny_preprocessed
    run_path = root / "nan-stop"
    shutil.rmtree(run_path, ignore_errors=True)
    shutil.copytree(one_epoch, run_path)
    _poison_one_training_image(run_path / "preprocess")
    capsys.readouterr()

    settings = ("train.epochs=2", "train.checkpoint_every_steps=1")
    code = _cli_train(monkeypatch, root, config_file, "nan-stop", *settings)

    err = capsys.readouterr().err.strip().splitlines()
    store = checkpoints.CheckpointStore(run_path / train.PARTIAL)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("ganomaly train: error: train: non-finite con_loss (nan) at epoch 2")
    assert ", step " in err[0] and "train.on_nan: stop" in err[0]
    assert f"last good checkpoint {store.checkpoints()[0]} " in err[0]
    assert f"best model {store.best_weights}" in err[0]
    assert store.best_weights.is_file()
    assert (store.checkpoints()[0] / checkpoints.STATE).is_file()
    assert not (run_path / "train").exists()


def test_on_nan_restore_rolls_back_with_halved_rates_at_most_n_times(
    tiny_preprocessed, monkeypatch, capsys
):
    config_file, root = tiny_preprocessed
    run_path = train_run(root, "nan-restore")
    _poison_one_training_image(run_path / "preprocess")
    capsys.readouterr()

    code = _cli_train(
        monkeypatch,
        root,
        config_file,
        "nan-restore",
        "train.on_nan=restore",
        "train.nan_restores=2",
    )

    captured = capsys.readouterr()
    rolled = [line for line in captured.out.splitlines() if "rolled back" in line]
    assert code == 2
    assert len(rolled) == 2
    assert "halved to 0.0001 (restore 1 of 2" in rolled[0]
    assert "halved to 5e-05 (restore 2 of 2" in rolled[1]
    assert "after 2 restores, train.nan_restores" in captured.err
    assert not (run_path / "train").exists()


def test_patience_stops_when_validation_does_not_improve(tiny_preprocessed):
    config_file, root = tiny_preprocessed
    # A learning rate that wrecks the generator: validation reconstruction stops improving.
    config = _config(config_file, "train.epochs=4", "train.patience=1", "train.lr=100")
    out = _train_in_process(config, train_run(root, "patience"))
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    losses = list(np.atleast_1d(history[train.SELECTION_METRIC]))
    summary = _train_summary(out)
    # It ran up to and including the first epoch that did not beat the best so far.
    first_stale = next(i for i in range(1, len(losses)) if losses[i] >= min(losses[:i]))
    assert len(losses) == first_stale + 1 < 4
    assert summary["stopped_early"] is True
    assert summary["best_epoch"] == int(np.argmin(losses)) + 1


def _env(root: Path) -> dict:
    return dict(os.environ, GANOMALY_ARTIFACTS=str(root), TF_CPP_MIN_LOG_LEVEL="2")


def _train_process(root: Path, config_file: Path, run: str, *overrides: str):
    sets = [arg for o in overrides for arg in ("--set", o)]
    command = [sys.executable, "-m", "pipeline.cli", "train", "--config", str(config_file)]
    return subprocess.Popen(
        [*command, "--run", run, *sets],
        cwd=REPO,
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _freeze_mid_epoch(process: subprocess.Popen, partial: Path, steps_per_epoch: int) -> int:
    """Stops ``process`` (SIGSTOP) once its newest checkpoint is mid-epoch; returns its step.

    A checkpoint at an epoch's end would make the kill test a resume between epochs;
    a stopped process writes nothing more, so its newest checkpoint is what it resumes.
    """
    store, seen = checkpoints.CheckpointStore(partial), steps_per_epoch  # past epoch 1
    while True:
        _wait_for_step_after(store, seen, process)
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # the signal lands; then nothing more is written
        seen = max(_steps(store))
        if seen % steps_per_epoch:
            return seen
        process.send_signal(signal.SIGCONT)


def _steps(store) -> list[int]:
    return [int(p.name.split("-")[1]) for p in store.checkpoints()]


def _wait_for_step_after(store, step: int, process: subprocess.Popen, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while max(_steps(store), default=-1) <= step:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"no checkpoint after step {step}"
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_the_same_command_ends_as_an_uninterrupted_run(
    tiny_preprocessed,
):
    config_file, root = tiny_preprocessed
    settings = ("train.epochs=3", "train.checkpoint_every_steps=1")
    reference_path, killed_path = train_run(root, "reference"), train_run(root, "killed")
    reference = _train_process(root, config_file, "reference", *settings)
    killed = _train_process(root, config_file, "killed", *settings)
    step = _freeze_mid_epoch(killed, killed_path / train.PARTIAL, steps_per_epoch=3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (killed_path / "train").exists()

    again = _train_process(root, config_file, "killed", *settings)
    output = again.communicate(timeout=240)[0]
    assert again.returncode == 0, output
    assert reference.wait(timeout=240) == 0, reference.communicate()[0]

    resumed = [line for line in output.splitlines() if "resuming from" in line]
    # From the checkpoint the frozen process had written last: mid-epoch, not a boundary.
    name = checkpoints.CheckpointStore.name(step)
    where = f"{name} (epoch {step // 3 + 1}, step {step % 3} done)"
    assert len(resumed) == 1 and where in resumed[0], output
    ref_out, out = reference_path / "train", killed_path / "train"
    assert (out / "history.csv").read_text() == (ref_out / "history.csv").read_text()
    assert _same_weights(out / "model.weights.h5", ref_out / "model.weights.h5")
    assert _same_weights(
        out / "checkpoints" / "last.weights.h5", ref_out / "checkpoints" / "last.weights.h5"
    )
    assert _train_summary(out) == _train_summary(ref_out)
    assert (out / artifacts.SUCCESS).is_file()
    assert not (killed_path / train.PARTIAL).exists()  # cleaned once the stage completed
