"""tf.distribute: two real worker processes on 127.0.0.1, mirrored, mixed precision.

The two-worker tests start `ganomaly train` twice with their own ``TF_CONFIG``
(``train.strategy=multi_worker``), as a cluster would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from components import train
from models import scoring
from pipeline.core import artifacts, modeling, records
from pipeline.core.config import load_config
from tests.conftest import train_run

REPO = Path(__file__).resolve().parent.parent
# The chief's scores of the test split and its validation losses against a single
# process trained on the same global batches (measured: 1.4e-6 and 8e-7 at most). Each
# worker normalises its own half batch and takes its half's feature-matching loss, so
# the training losses it reports are the replicas' mean, not the global batch's (up to
# 5% apart on this tiny data), and the generator drifts apart by that much less. A run
# with another seed (the negative control) differs by far more.
SCORE_RTOL = 1e-5
VALIDATION_LOSSES = ("val_con_loss", "val_g_loss")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(root: Path, config_file: Path, run: str, *overrides: str) -> list[subprocess.Popen]:
    """Starts the two workers of a cluster, each with its ``TF_CONFIG``; worker 0 is the chief."""
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    sets = [arg for o in ("train.strategy=multi_worker", *overrides) for arg in ("--set", o)]
    command = [sys.executable, "-m", "pipeline.cli", "train", "--config", str(config_file)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            GANOMALY_ARTIFACTS=str(root),
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        processes.append(
            subprocess.Popen(
                [*command, "--run", run, *sets],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def _map_scores(config, train_dir: Path, images: np.ndarray) -> np.ndarray:
    """The raw residual map scores of ``images`` (no validation statistics needed)."""
    scorer = modeling.build_scorer(config, modeling.load_trained(config, train_dir))
    raw = scorer.raw_scores(images)
    return np.asarray(scoring.topk_mean(raw["residual"], config.score.topk_fraction))


def _test_images(preprocess_dir: Path) -> np.ndarray:
    return np.stack([ex["image"].numpy() for ex in records.read_split(preprocess_dir, "test")])


@pytest.mark.slow
def test_two_workers_train_to_the_end_and_score_like_one_process(tiny_preprocessed):
    config_file, root = tiny_preprocessed
    # 36 training normals in global batches of 12: no partial batch to drop.
    settings = ("train.batch_size=12",)
    cluster_path, single_path = train_run(root, "cluster"), train_run(root, "single")
    chief, worker = _workers(root, config_file, "cluster", *settings)
    config = load_config(config_file, list(settings))
    out = single_path / "out"
    out.mkdir()
    train.run(config, {"preprocess": single_path / "preprocess"}, out)  # meanwhile, alone

    chief_output = chief.communicate(timeout=300)[0]
    worker_output = worker.communicate(timeout=60)[0]
    assert chief.returncode == 0, chief_output
    assert worker.returncode == 0, worker_output
    assert (cluster_path / "train" / artifacts.SUCCESS).is_file()
    assert not (cluster_path / train.PARTIAL).exists()
    assert "worker of a cluster; the chief writes the output" in worker_output
    # Both workers saw the same global losses.
    epochs = [line for line in chief_output.splitlines() if line.startswith("[train] epoch")]
    assert len(epochs) == 2
    assert epochs == [line for line in worker_output.splitlines() if line.startswith("[train] ep")]

    images = _test_images(single_path / "preprocess")
    cluster_scores = _map_scores(config, cluster_path / "train", images)
    single_scores = _map_scores(config, out, images)
    assert len(images) > 0
    np.testing.assert_allclose(cluster_scores, single_scores, rtol=SCORE_RTOL)
    cluster_history, single_history = (_history(p) for p in (cluster_path / "train", out))
    assert cluster_history.keys() == single_history.keys()
    for name in VALIDATION_LOSSES:
        np.testing.assert_allclose(
            cluster_history[name], single_history[name], rtol=SCORE_RTOL, err_msg=name
        )

    # The negative control: another seed, the same data; the comparison above would fail.
    other = load_config(config_file, [*settings, "train.seed=1"])
    other_out = train_run(root, "other-seed") / "out"
    other_out.mkdir()
    train.run(other, {"preprocess": other_out.parent / "preprocess"}, other_out)
    other_scores = _map_scores(other, other_out, images)
    assert np.max(np.abs(other_scores / single_scores - 1)) > 10 * SCORE_RTOL  # 5e-4 measured
    other_loss = _history(other_out)["val_con_loss"]
    assert np.max(np.abs(other_loss / single_history["val_con_loss"] - 1)) > 10 * SCORE_RTOL


def _history(train_dir: Path) -> dict[str, np.ndarray]:
    table = np.genfromtxt(train_dir / "history.csv", delimiter=",", names=True)
    return {name: np.atleast_1d(table[name]) for name in table.dtype.names}


@pytest.mark.slow
def test_kill_9_of_one_worker_fails_the_run_in_one_line_instead_of_hanging(tiny_preprocessed):
    config_file, root = tiny_preprocessed
    run_path = train_run(root, "cluster-killed")
    settings = (
        "train.epochs=200",
        "train.checkpoint_every_steps=1",
        "train.worker_timeout_s=15",
    )
    chief, worker = _workers(root, config_file, "cluster-killed", *settings)
    deadline = time.monotonic() + 240
    while not (run_path / train.PARTIAL / "ckpt-000000002").exists():
        assert chief.poll() is None, chief.communicate()[0]
        assert time.monotonic() < deadline, "the cluster never trained two steps"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()

    output = chief.communicate(timeout=120)[0]
    waited = time.monotonic() - killed_at
    errors = [line for line in output.splitlines() if line.startswith("ganomaly train: error:")]
    assert chief.returncode == 2, output
    assert len(errors) == 1, output
    assert "a worker" in errors[0] and "cannot be reached" in errors[0]
    assert "Traceback" not in output
    assert waited < 60
    assert not (run_path / "train").exists()
    assert (run_path / train.PARTIAL / "ckpt-000000002").is_dir()  # resumable


def _train_in(root: Path, run: str, config) -> tuple[Path, Path]:
    """Trains ``config`` into a fresh run under ``root``; checks the history and the policy."""
    run_path = train_run(root, run)
    out = run_path / "out"
    out.mkdir()
    train.run(config, {"preprocess": run_path / "preprocess"}, out)
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert all(np.isfinite(history[name]) for name in history.dtype.names)
    assert keras.mixed_precision.global_policy().name == "float32"  # left as found
    return run_path, out


def _scores_computed_in(dtype: str, config, run_path: Path, out: Path) -> dict:
    """The trained networks computing in ``dtype``, as training ran them, score the test split."""
    keras.mixed_precision.set_global_policy(f"mixed_{dtype}")
    try:
        model = modeling.load_trained(config, out)
        assert model.generator.compute_dtype == dtype
        return modeling.build_scorer(config, model).score(_test_images(run_path / "preprocess"))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _assert_float32_and_finite(scores: dict, names: tuple[str, ...]) -> None:
    for name in names:
        assert scores[name].dtype == "float32", name
        assert np.all(np.isfinite(np.asarray(scores[name]))), name


@pytest.mark.slow  # over 20 s on 2 cores
def test_mirrored_mixed_precision_trains_with_finite_losses_and_scores_in_float32(
    tiny_preprocessed,
):
    config_file, root = tiny_preprocessed
    config = load_config(
        config_file, ["train.epochs=1", "train.strategy=mirrored", "train.mixed_precision=true"]
    )
    run_path, out = _train_in(root, "mixed", config)
    # Networks computing in float16: the scorer still gives float32.
    scores = _scores_computed_in("float16", config, run_path, out)
    _assert_float32_and_finite(scores, ("score", "anomaly_map", "map_score", "reconstruction"))


def test_bfloat16_trains_without_loss_scaling_and_scores_in_float32(tiny_preprocessed, capsys):
    config_file, root = tiny_preprocessed
    config = load_config(config_file, ["train.epochs=1", "train.mixed_precision=bfloat16"])
    model = train.compiled_model(config)
    assert not isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    run_path, out = _train_in(root, "bfloat16", config)
    emulated = "train.mixed_precision bfloat16: this CPU has no bfloat16 unit"
    native = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    assert (emulated in capsys.readouterr().out) is not native
    scores = _scores_computed_in("bfloat16", config, run_path, out)
    _assert_float32_and_finite(scores, ("score", "anomaly_map"))
