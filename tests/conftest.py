"""Shared fixtures: a tiny generated dataset, a real MLflow store and one pipeline run."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline.core.config import load_config  # noqa: E402

# Small enough for a CPU test, large enough that every split has images.
TINY_OVERRIDES = [
    "data.synthetic_train=48",
    "data.synthetic_test=6",
    "data.synthetic_size=64",
    "data.val_fraction=0.25",
    "preprocess.isize=32",
    "model.nz=16",
    "model.ngf=8",
    "model.ndf=8",
    "train.epochs=2",
    "train.batch_size=16",
    "score.kind=residual",
]


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """A real sqlite MLflow store for the whole session."""
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Where built-in datasets are generated during the tests."""
    import components.ingest as ingest

    path = tmp_path_factory.mktemp("data")
    ingest.DATA_DIR = path
    return path


def tiny_config(*extra: str):
    return load_config(None, [*TINY_OVERRIDES, *extra])


def run_all_stages(tmp_path_factory, config, name: str) -> Path:
    """The five stages of ``config`` as run ``name`` in a fresh artifacts folder; its path."""
    from pipeline.cli import STAGES, run_stage

    run_path = tmp_path_factory.mktemp("artifacts") / name
    for stage in STAGES:
        run_stage(stage, config, name, run_path)
    return run_path


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, mlflow_uri, data_dir):
    """One complete run of the five stages on the tiny valve-seat data."""
    config = tiny_config()
    return config, run_all_stages(tmp_path_factory, config, "tiny")


@pytest.fixture(scope="session")
def tiny_preprocessed(tmp_path_factory, mlflow_uri, data_dir):
    """The tiny data ingested and preprocessed once: ``(config file, artifacts root)``.

    ``train_run(root, name)`` gives each training test a run of its own over it.
    """
    from pipeline.cli import run_stage
    from pipeline.core.config import dump_config

    root = tmp_path_factory.mktemp("train-artifacts")
    config = tiny_config()
    path = root / "tiny.yaml"
    path.write_text(dump_config(config))
    for stage in ("ingest", "preprocess"):
        run_stage(stage, config, "base", root / "base")
    return path, root


def train_run(root: Path, name: str) -> Path:
    """A new run folder under ``root`` holding the tiny run's finished preprocess stage."""
    import shutil

    run_path = root / name
    shutil.rmtree(run_path, ignore_errors=True)
    run_path.mkdir()
    shutil.copytree(root / "base" / "preprocess", run_path / "preprocess")
    return run_path


def pytest_collection_modifyitems(items):
    """Whatever needs the whole pipeline run is slow (``pytest -m "not slow"`` skips it).

    The order is pytest-xdist's (``--dist loadfile``: the modules with the most tests
    first, a module per worker at a time). Two other orders measured no faster on 2 cores
    (``pytest -n 2``, against 417 s): the modules with the most slow tests first and the
    modules of the session's ``pipeline_run`` on one worker, so the run is made once
    (460 s); those modules on one worker alone (430 s).
    """
    for item in items:
        if set(getattr(item, "fixturenames", ())) & {"pipeline_run", "head_run"}:
            item.add_marker(pytest.mark.slow)
