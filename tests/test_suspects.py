"""suspects.csv: the training and validation normals by anomaly score, planted defects first."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components import evaluate
from components.evaluation_report import planted_in_top
from models.ganomaly import GANomaly
from models.scorer import Scorer
from pipeline import tracking
from pipeline.cli import run_stage
from pipeline.core import records
from tests.conftest import tiny_config

ISIZE = 32


def _write_split(folder, split: str, rows: list[tuple[int, str]], rng) -> list[str]:
    """One shard of random ``ISIZE`` images with ``(label, path)``; returns the paths."""
    shard = f"{split}-00000.tfrecord"
    with tf.io.TFRecordWriter(str(folder / shard)) as writer:
        for label, path in rows:
            image = rng.uniform(-1, 1, (ISIZE, ISIZE, 1))
            blank = np.zeros((ISIZE, ISIZE))
            defect = "good" if label == 0 else "crack"
            writer.write(records.encode(image, blank + 1, blank, label, defect, path))
    return [shard]


@pytest.fixture
def preprocessed(tmp_path):
    """Records of a train split with a labelled defect and a val split with a defect."""
    rng = np.random.default_rng(0)
    train = [(0, f"train/good/{i}.png") for i in range(5)] + [(1, "train/crack/0.png")]
    val = [(0, f"train/good/{i}.png") for i in range(5, 8)] + [(1, "test/crack/1.png")]
    splits = {}
    for split, rows in (("train", train), ("val", val)):
        splits[split] = {"shards": _write_split(tmp_path, split, rows, rng)}
    spec = {"isize": ISIZE, "channels": 1}
    (tmp_path / records.INFO_FILE).write_text(json.dumps({"spec": spec, "splits": splits}))
    manifest = pd.DataFrame(
        {
            "path": [path for _, path in train + val],
            "planted": [""] * 4 + ["crack"] + [""] * 5,  # train/good/4.png is planted
        }
    )
    return tmp_path, manifest


def _scorer() -> Scorer:
    model = GANomaly(isize=ISIZE, options={"nz": 8, "ngf": 8, "ndf": 8})
    return Scorer(model, {"kind": "residual"})


def test_suspects_are_exactly_the_normals_scored_as_the_test_split_is(preprocessed):
    folder, manifest = preprocessed
    scorer = _scorer()
    val = evaluate.score_split(scorer, folder, "val")
    table = evaluate.suspects(scorer, folder, val, manifest)
    assert list(table.columns) == ["path", "score", "split", "planted"]
    # Every normal of train and val, no labelled defect, no validation defect.
    assert sorted(table["path"]) == sorted(f"train/good/{i}.png" for i in range(8))
    assert table["split"].value_counts().to_dict() == {"train": 5, "val": 3}
    assert table["score"].is_monotonic_decreasing
    # The same score as score_split gives each record (the test split's scoring).
    train = evaluate.score_split(scorer, folder, "train")
    expected = dict(zip(train["path"], train["score"]))
    expected.update(zip(val["path"], val["score"]))
    np.testing.assert_allclose(table["score"], table["path"].map(expected), rtol=1e-6)
    planted = table.set_index("path")["planted"]
    assert planted["train/good/4.png"] == "crack" and (planted.drop("train/good/4.png") == "").all()


def test_without_a_planted_column_there_is_none_and_no_recall(preprocessed):
    folder, manifest = preprocessed
    scorer = _scorer()
    val = evaluate.score_split(scorer, folder, "val")
    table = evaluate.suspects(scorer, folder, val, manifest.drop(columns="planted"))
    assert list(table.columns) == ["path", "score", "split"]
    assert evaluate.planted_recall(table) is None


def test_planted_recall_counts_the_top_twice_k_rows():
    # k = 2 planted; the top 4 rows hold one of them, the other is 5th.
    table = pd.DataFrame({"planted": ["", "pit", "", "", "chip", ""]})
    assert planted_in_top(table) == (1, 2)
    assert evaluate.planted_recall(table) == 0.5
    assert evaluate.planted_recall(pd.DataFrame({"planted": ["", ""]})) is None


# Small enough for a test, trained long enough (300 steps) to tell the defects apart.
CONTAMINATED = (
    "data.contamination=0.1",
    "data.synthetic_train=96",
    "data.synthetic_test=8",
    "model.nz=64",
    "model.ngf=16",
    "model.ndf=16",
    "train.epochs=25",
    "train.batch_size=8",
    "train.lr=0.001",
)


@pytest.fixture(scope="module")
def contaminated_run(tmp_path_factory, mlflow_uri, data_dir):
    """Ingest to evaluate on the tiny valve seats, 10% of the training normals defective."""
    config = tiny_config(*CONTAMINATED)
    run_path = tmp_path_factory.mktemp("artifacts") / "contaminated"
    for stage in ("ingest", "preprocess", "train", "evaluate"):
        run_stage(stage, config, "contaminated", run_path)
    return run_path


@pytest.mark.slow
def test_suspects_csv_covers_the_manifests_normals_highest_first(contaminated_run):
    manifest = pd.read_csv(contaminated_run / "ingest" / "manifest.csv", keep_default_na=False)
    table = pd.read_csv(contaminated_run / "evaluate" / "suspects.csv", keep_default_na=False)
    normals = manifest[manifest["split"].isin(["train", "val"]) & (manifest["label"] == 0)]
    assert sorted(table["path"]) == sorted(normals["path"])
    assert table["score"].is_monotonic_decreasing
    assert dict(zip(table["path"], table["planted"])) == dict(
        zip(normals["path"], normals["planted"])
    )
    # 96 * 0.1 / 0.9 = 10.7: 11 planted, some of them carved into validation.
    assert (table["planted"] != "").sum() == 11
    assert set(table.loc[table["planted"] != "", "split"]) == {"train", "val"}


@pytest.mark.slow
def test_the_planted_defects_rank_first(contaminated_run, mlflow_uri):
    mlflow = pytest.importorskip("mlflow")
    table = pd.read_csv(contaminated_run / "evaluate" / "suspects.csv", keep_default_na=False)
    planted = table["planted"] != ""
    # Chance would put 22 / 107 = 21% of them in the top 22 rows; 82% when written.
    recall = planted.iloc[:22].sum() / 11
    assert recall >= 0.6, table.head(22)
    assert planted.iloc[0]
    run_id = json.loads((contaminated_run / tracking.RUN_FILE).read_text())["run_id"]
    run = mlflow.tracking.MlflowClient(mlflow_uri).get_run(run_id)
    assert run.data.metrics["planted_recall_at_2k"] == pytest.approx(recall)
    report = (contaminated_run / "evaluate" / "report.md").read_text()
    section = report.split("## Suspects")[1].split("## Worst")[0]
    assert section.count("| train |") + section.count("| val |") == 10
    assert "are among the top 22 rows" in section
    artifacts = mlflow.tracking.MlflowClient(mlflow_uri).list_artifacts(run_id, "evaluate")
    assert "evaluate/suspects.csv" in {a.path for a in artifacts}
