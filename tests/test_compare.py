"""python -m pipeline.compare on a real sqlite MLflow store with runs logged by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import compare

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "valve-seats-compare"
COMMON = {"data.seed": "0", "preprocess.isize": "64", "model.nz": "400"}
# name: (params differing from COMMON, final metrics, val_con_loss per epoch)
RUNS = {
    "alpha": (
        {"train.epochs": "10", "score.kind": "residual"},
        {"image_auroc": 0.80, "pixel_auroc": 0.95, "aupro": 0.50, "f1": 0.70},
        [0.50, 0.40, 0.30],
    ),
    "beta": (
        {"train.epochs": "20", "score.kind": "ssim"},
        {"image_auroc": 0.90, "pixel_auroc": 0.85, "aupro": 0.40, "f1": 0.75},
        [0.60, 0.45, 0.35, 0.20],
    ),
    # Evaluated without an image AUROC: sorts last by it.
    "gamma": (
        {"train.epochs": "10", "score.kind": "ssim"},
        {"pixel_auroc": 0.99, "aupro": 0.60, "f1": 0.65},
        [0.55, 0.50],
    ),
}


def _log(client, experiment_id, name, params, metrics, curve, status="FINISHED"):
    run = client.create_run(experiment_id, run_name=name)
    run_id = run.info.run_id
    for key, value in {**COMMON, **params}.items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for epoch, value in enumerate(curve, start=1):
        client.log_metric(run_id, "val_con_loss", value, step=epoch)
        client.log_metric(run_id, "g_loss", 10 * value, step=epoch)
    if status:
        client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store: three comparable runs, plus a failed and a deleted one that must not show."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    ids = {name: _log(client, experiment_id, name, *spec) for name, spec in RUNS.items()}
    best = {"image_auroc": 0.99, "pixel_auroc": 0.999}
    _log(client, experiment_id, "crashed", {"train.epochs": "5"}, best, [0.1], status="FAILED")
    gone = _log(client, experiment_id, "deleted", {"train.epochs": "7"}, best, [0.1])
    client.delete_run(gone)
    client.create_experiment("empty-experiment")
    return uri, ids


@pytest.fixture
def uri(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    return store[0]


def _compare(capsys, *argv):
    code = compare.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _table_rows(out: str) -> list[list[str]]:
    """The printed table's rows after its header line, split on whitespace."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    return [line.split() for line in lines[header + 1 :] if not line.startswith("wrote ")]


# --- the pure functions, on run records ------------------------------------------------


def _record(name, params, metrics=None, start=0):
    return compare.RunRecord(name + "-id-0123456789", name, params, metrics or {}, start_time=start)


def test_differing_params_keeps_keys_whose_values_differ():
    runs = [
        _record("a", {"x": "1", "y": "2", "z": "3"}),
        _record("b", {"x": "1", "y": "5", "z": "3"}),
    ]
    assert compare.differing_params(runs) == ["y"]


def test_a_key_only_some_runs_have_differs():
    runs = [_record("a", {"x": "1", "w": "0"}), _record("b", {"x": "1"})]
    assert compare.differing_params(runs) == ["w"]


def test_one_run_shows_all_its_params():
    assert compare.differing_params([_record("a", {"y": "2", "x": "1"})]) == ["x", "y"]


def test_ties_go_newest_first_and_nan_counts_as_missing():
    runs = [
        _record("old", {}, {"f1": 0.5}, start=1),
        _record("nan", {}, {"f1": float("nan")}, start=3),
        _record("new", {}, {"f1": 0.5}, start=2),
    ]
    assert compare.comparison_table(runs, "f1")["run"].tolist() == ["new", "old", "nan"]


def test_losses_sort_lowest_first_and_a_run_without_one_last():
    runs = [
        _record("none", {}, {"f1": 0.5}),
        _record("a", {}, {"val_con_loss": 0.3}),
        _record("b", {}, {"val_con_loss": 0.1}),
    ]
    table = compare.comparison_table(runs, "val_con_loss")
    assert table["run"].tolist() == ["b", "a", "none"]
    assert list(table.columns) == ["run", "run_id", "f1", "val_con_loss"]


def test_runs_sharing_a_name_are_told_apart_by_id():
    runs = [_record("a", {}), _record("a", {}), _record("b", {})]
    runs[1] = compare.RunRecord("f00dfeed99", "a")
    assert compare.run_labels(runs) == ["a (a-id-012)", "a (f00dfeed)", "b"]


# --- the store and the command ---------------------------------------------------------


def test_only_the_differing_params_are_shown(uri):
    runs = compare.load_runs(EXPERIMENT)
    table = compare.comparison_table(runs, "image_auroc")
    assert list(table.columns) == [
        "run",
        "run_id",
        "score.kind",
        "train.epochs",
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "f1",
    ]


def test_failed_and_deleted_runs_are_left_out(uri):
    assert sorted(run.name for run in compare.load_runs(EXPERIMENT)) == ["alpha", "beta", "gamma"]


def test_runs_sort_best_first_and_one_without_the_metric_last(uri, capsys):
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT)
    assert code == 0, err
    rows = _table_rows(out)
    assert [row[0] for row in rows] == ["beta", "alpha", "gamma"]
    assert rows[0][2:4] == ["ssim", "20"]
    assert rows[2][4] == "-"  # gamma has no image_auroc
    assert "by image_auroc" in out.splitlines()[0]


def test_another_metric_gives_another_order(uri, capsys):
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT, "--metric", "pixel_auroc")
    assert code == 0, err
    assert [row[0] for row in _table_rows(out)] == ["gamma", "alpha", "beta"]
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT, "--metric", "val_con_loss")
    assert code == 0, err
    # Last logged values: alpha 0.30, beta 0.20, gamma 0.50.
    assert [row[0] for row in _table_rows(out)] == ["beta", "alpha", "gamma"]


def test_the_experiment_defaults_to_the_configs(uri, capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  name: {EXPERIMENT}\n")
    code, out, err = _compare(capsys, "--config", str(config))
    assert code == 0, err
    assert out.startswith(f"experiment {EXPERIMENT}: 3 runs")


def test_csv_holds_the_table(uri, capsys, store, tmp_path):
    target = tmp_path / "runs.csv"
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT, "--csv", str(target))
    assert code == 0, err
    table = pd.read_csv(target, dtype={"train.epochs": str})
    assert table["run"].tolist() == ["beta", "alpha", "gamma"]
    assert table["run_id"].tolist() == [store[1][name][:8] for name in ("beta", "alpha", "gamma")]
    assert table["score.kind"].tolist() == ["ssim", "residual", "ssim"]
    assert table["train.epochs"].tolist() == ["20", "10", "10"]
    assert table["image_auroc"].tolist()[:2] == pytest.approx([0.90, 0.80])
    assert pd.isna(table["image_auroc"].iloc[2])
    assert table["aupro"].tolist() == pytest.approx([0.40, 0.50, 0.60])
    assert "data.seed" not in table.columns and "f1_oracle" not in table.columns


def test_validation_curves_come_from_the_metric_history(uri):
    runs = compare.load_runs(EXPERIMENT)
    curves = compare.validation_curves(runs)
    assert curves["beta"] == {"val_con_loss": [(1, 0.60), (2, 0.45), (3, 0.35), (4, 0.20)]}
    figure = compare.plot_curves(curves)
    lines = figure.axes[0].get_lines()
    assert sorted(line.get_label() for line in lines) == ["alpha", "beta", "gamma"]
    assert figure.axes[0].get_xlabel() == "epoch"


def test_plot_writes_a_png(uri, capsys, tmp_path):
    target = tmp_path / "curves.png"
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT, "--plot", str(target))
    assert code == 0, err
    with Image.open(target) as image:
        image.load()
        assert image.format == "PNG" and image.width > 200 and image.height > 200
        assert np.asarray(image.convert("L"), np.float32).std() > 5  # not a blank canvas


def test_a_config_tag_overrides_the_logged_param(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri, _ = store
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("rerun-experiment")
    run_id = _log(client, experiment_id, "rerun", {"score.kind": "latent"}, {"f1": 0.5}, [0.2])
    client.set_tag(run_id, "config.score.kind", "ssim")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (run,) = compare.load_runs("rerun-experiment")
    assert run.params["score.kind"] == "ssim" and run.params["data.seed"] == "0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--experiment", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["--experiment", "empty-experiment"], "has no finished or running runs"),
        (["--experiment", EXPERIMENT, "--metric", "no_such_metric"], "unknown metric"),
    ],
)
def test_errors_are_one_line_and_write_nothing(uri, capsys, tmp_path, argv, message):
    csv, png = tmp_path / "runs.csv", tmp_path / "curves.png"
    code, out, err = _compare(capsys, *argv, "--csv", str(csv), "--plot", str(png))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("compare: error: ") and message in err
    assert not csv.exists() and not png.exists()


def test_a_missing_local_store_is_an_error_not_a_new_store(monkeypatch, capsys, tmp_path):
    database = tmp_path / "absent" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    code, out, err = _compare(capsys, "--experiment", EXPERIMENT)
    assert code == 2 and out == ""
    assert err == f"compare: error: no MLflow store at {database}; run the pipeline first\n"
    assert not database.exists()


def test_the_module_runs_as_a_command(uri, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.compare", "--experiment", EXPERIMENT, "--metric", "f1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row[0] for row in _table_rows(done.stdout)] == ["beta", "alpha", "gamma"]
