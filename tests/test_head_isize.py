"""``model.head_isize``: the defect head at a larger size than the generator."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models.ganomaly import GANomaly
from models.networks import build_defect_head
from models.scorer import Scorer
from pipeline.cli import STAGES, run_stage
from pipeline.core import modeling, records
from pipeline.core.config import ConfigError
from tests.conftest import tiny_config

OPTIONS = {"nz": 8, "ngf": 8, "ndf": 8, "defect_head": True, "head_filters": 4}


def test_head_isize_0_builds_todays_head_weight_for_weight():
    keras.utils.set_random_seed(3)
    today = build_defect_head(32, 1, 4)
    keras.utils.set_random_seed(3)
    model = GANomaly(32, 1, {**OPTIONS, "head_isize": 0})
    assert model.head_isize == 32 and not model.head_sized
    assert [w.shape for w in model.head.weights] == [w.shape for w in today.weights]
    assert [layer.__class__ for layer in model.head.layers] == [
        layer.__class__ for layer in today.layers
    ]
    same = GANomaly(32, 1, {**OPTIONS, "head_isize": 32})
    assert not same.head_sized


def test_a_larger_head_reads_pairs_and_maps_at_its_size():
    keras.utils.set_random_seed(0)
    model = GANomaly(32, 1, {**OPTIONS, "head_isize": 64})
    optimizer = lambda: keras.optimizers.Adam(1e-3)  # noqa: E731
    model.compile(optimizer(), optimizer(), h_optimizer=optimizer())
    images = tf.random.uniform((4, 32, 32, 1), -1, 1)
    head_images = tf.random.uniform((4, 64, 64, 1), -1, 1)
    masks = tf.zeros((4, 64, 64, 1))
    labelled = ((images[:2], head_images[:2]), masks[:2], tf.ones(2))
    out = model.train_step(((images, head_images), images, masks, *labelled))
    assert np.isfinite(float(out["head_loss"]))
    scorer = Scorer(model, {"kind": "head_residual"})
    assert scorer.map_size == (64, 64)
    scorer.calibrate([(images, head_images)])
    assert scorer.score((images, head_images))["anomaly_map"].shape == (4, 64, 64)
    with pytest.raises(ValueError, match="reads images of 64 px"):
        scorer.score(images)
    # A kind that does not read the head maps at its size too (where the masks are).
    residual = Scorer(model, {"kind": "residual"})
    assert residual.score((images, head_images))["anomaly_map"].shape == (4, 64, 64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.head_isize=40"], "head_isize must be 0 or a multiple of 16.*got 40"),
        (["model.head_isize=16"], "head_isize must be 0 or a multiple of 16.*got 16"),
        (
            ["preprocess.isize=64", "model.head_isize=48", "model.defect_head=true"],
            "model.head_isize: 48 is not 0 or a multiple of 16 of at least preprocess.isize",
        ),
        (
            [
                "model.head_isize=64",
                "model.defect_head=true",
                "preprocess.tiles=[24,0]",
                "preprocess.tiles_image=[48,48]",
            ],
            "model.head_isize: 64 does not go with preprocess.tiles",
        ),
        (["model.head_isize=64"], "model.head_isize: 64 is the defect head's size"),
    ],
)
def test_bad_head_sizes_are_refused_quoting_the_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("train.synthetic_anomalies=0.5", *overrides)


@pytest.fixture(scope="module")
def large_head_run(tmp_path_factory, mlflow_uri, data_dir):
    """The five stages on the tiny valve seats, the head at twice the generator's size."""
    config = tiny_config(
        "data.labelled_defects=2",
        "model.head_filters=4",
        "model.head_isize=64",
        "train.epochs=1",
    )
    run_path = tmp_path_factory.mktemp("artifacts") / "large-head"
    for stage in STAGES:
        run_stage(stage, config, "large-head", run_path)
    return config, run_path


def test_the_records_hold_both_sizes(large_head_run):
    _, run_path = large_head_run
    info = records.read_info(run_path / "preprocess")
    assert info["spec"]["isize"] == 32 and info["head_isize"] == 64
    example = next(iter(records.read_split(run_path / "preprocess", "test")))
    assert example["image"].shape == (32, 32, 1) and example["head_image"].shape == (64, 64, 1)
    assert example["mask"].shape == (64, 64) and example["roi"].shape == (64, 64)


def test_the_saved_model_maps_at_the_heads_size_as_the_scorer_did(large_head_run):
    config, run_path = large_head_run
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(4)
    files = [open(p, "rb").read() for p in scores["path"]]
    served = tf.saved_model.load(str(run_path / "export" / "ganomaly" / "1"))
    out = served.signatures["serving_bytes"](encoded=tf.constant(files))
    assert out["anomaly_map"].shape == (4, 64, 64)
    np.testing.assert_allclose(out["score"].numpy(), scores["score"], rtol=1e-4, atol=1e-4)
    card_file = run_path / "export" / "ganomaly" / "1" / "assets" / "ganomaly.json"
    card = json.loads(card_file.read_text())
    assert card["map_size"] == [64, 64] and card["head_isize"] == 64
    # The map itself: the scorer on the preprocessed records, the SavedModel on the files.
    config = records.with_resolved_spec(config, run_path / "preprocess")
    scorer = modeling.load_scorer(config, run_path / "train", run_path / "evaluate")
    test = records.read_split(run_path / "preprocess", "test").take(4).batch(4)
    expected = scorer.score(records.model_inputs(next(iter(test))))["anomaly_map"]
    np.testing.assert_allclose(out["anomaly_map"].numpy(), expected, rtol=1e-3, atol=1e-3)
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0
