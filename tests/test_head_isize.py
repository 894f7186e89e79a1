"""``model.head_isize``: the defect head at a larger size than the generator."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components import preprocess
from models.ganomaly import GANomaly
from models.networks import build_defect_head
from models.scorer import Scorer
from pipeline.core import modeling, records
from pipeline.core.config import ConfigError
from tests.conftest import run_all_stages, tiny_config

OPTIONS = {"nz": 8, "ngf": 8, "ndf": 8, "defect_head": True, "head_filters": 4}


def test_head_isize_0_builds_todays_head_weight_for_weight():
    keras.utils.set_random_seed(3)
    today = build_defect_head(32, 1, 4)
    keras.utils.set_random_seed(3)
    model = GANomaly(32, 1, {**OPTIONS, "head_isize": 0})
    assert model.head_size == (32, 32) and not model.head_sized
    assert [w.shape for w in model.head.weights] == [w.shape for w in today.weights]
    assert [layer.__class__ for layer in model.head.layers] == [
        layer.__class__ for layer in today.layers
    ]
    same = GANomaly(32, 1, {**OPTIONS, "head_isize": 32})
    assert not same.head_sized


@pytest.mark.parametrize(
    ("head", "size"),
    [({"head_isize": 64}, (64, 64)), ({"head_isize": 32, "head_size": [32, 80]}, (32, 80))],
)
def test_a_larger_head_reads_pairs_and_maps_at_its_size(head, size):
    keras.utils.set_random_seed(0)
    model = GANomaly(32, 1, {**OPTIONS, **head})
    optimizer = lambda: keras.optimizers.Adam(1e-3)  # noqa: E731
    model.compile(optimizer(), optimizer(), h_optimizer=optimizer())
    images = tf.random.uniform((4, 32, 32, 1), -1, 1)
    head_images = tf.random.uniform((4, *size, 1), -1, 1)
    masks = tf.zeros((4, *size, 1))
    labelled = ((images[:2], head_images[:2]), masks[:2], tf.ones(2))
    out = model.train_step(((images, head_images), images, masks, *labelled))
    assert np.isfinite(float(out["head_loss"]))
    scorer = Scorer(model, {"kind": "head_residual"})
    assert scorer.map_size == size
    scorer.calibrate([(images, head_images)])
    assert scorer.score((images, head_images))["anomaly_map"].shape == (4, *size)
    with pytest.raises(ValueError, match=r"reads images of \[\d+, \d+\] px"):
        scorer.score(images)
    # A kind that does not read the head maps at its size too (where the masks are).
    residual = Scorer(model, {"kind": "residual"})
    assert residual.score((images, head_images))["anomaly_map"].shape == (4, *size)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.head_isize=40"], "head_isize must be 0 or a multiple of 16.*got 40"),
        (["model.head_isize=-16"], "head_isize must be 0 or a multiple of 16.*got -16"),
        (["model.head_aspect=wide"], "head_aspect must be one of .*got 'wide'"),
        (["model.head_size=[64,40]"], r"head_size must be \[height, width\].*got \[64, 40\]"),
        (["model.head_size=[64,x]"], r"head_size must be \[height, width\].*got \[64, 'x'\]"),
    ],
)
def test_bad_head_sizes_are_refused_quoting_the_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("train.synthetic_anomalies=0.5", *overrides)


def _manifest(labelled: int, height: int = 100, width: int = 100) -> pd.DataFrame:
    rows = [("train", 0, height, width)] * 3 + [("train", 1, height, width)] * labelled
    rows += [("test", 1, height, width)]
    return pd.DataFrame(rows, columns=["split", "label", "height", "width"])


@pytest.mark.parametrize(
    ("overrides", "labelled", "expected"),
    [
        (["model.head_isize=64"], 0, 0),  # no head: the run trains on normals alone
        (["model.head_isize=64"], 2, 64),  # labelled defects turn the head on
        (["model.head_isize=64", "model.defect_head=true"], 0, 64),
        (["model.head_isize=32", "model.defect_head=true"], 0, 0),  # not above isize
        (
            [
                "model.head_isize=64",
                "model.defect_head=true",
                "preprocess.tiles=[24,0]",
                "preprocess.tiles_image=[48,48]",
            ],
            0,
            0,  # tiles already read native pixels
        ),
    ],
)
def test_head_isize_applies_to_a_head_reading_larger_whole_images(overrides, labelled, expected):
    config = tiny_config("train.synthetic_anomalies=0.5", *overrides)
    assert preprocess.larger_head_isize(config, _manifest(labelled)) == expected


@pytest.mark.parametrize(
    ("overrides", "frames", "expected"),
    [
        ([], (1280, 512), [64, 64]),  # square unless asked
        (["model.head_aspect=keep"], (1280, 512), [160, 64]),  # 2.5:1, the long side x 2.5
        (["model.head_aspect=keep"], (512, 1280), [64, 160]),
        (["model.head_aspect=keep"], (330, 290), [80, 64]),  # 1.14: to a multiple of 16
        (["model.head_aspect=keep"], (300, 310), [64, 64]),
        (["model.head_aspect=keep", "preprocess.resize=letterbox"], (1280, 512), [64, 64]),
        (["model.head_size=[48,96]"], (1280, 512), [48, 96]),  # as the user set it
        (["model.head_isize=0", "model.head_size=[48,96]"], (1280, 512), [48, 96]),
    ],
)
def test_the_heads_size_keeps_the_frames_aspect_when_asked(overrides, frames, expected):
    config = tiny_config("train.synthetic_anomalies=0.5", "model.head_isize=64", *overrides)
    assert preprocess.head_size(config, _manifest(2, *frames)) == expected


@pytest.fixture(scope="module")
def large_head_run(tmp_path_factory, mlflow_uri, data_dir):
    """The five stages on the tiny valve seats, the head larger, and not square."""
    config = tiny_config(
        "data.labelled_defects=2",
        "model.head_filters=4",
        "model.head_isize=64",
        "model.head_size=[64,96]",
        "train.epochs=1",
    )
    return config, run_all_stages(tmp_path_factory, config, "large-head")


def test_the_records_hold_both_sizes(large_head_run):
    _, run_path = large_head_run
    info = records.read_info(run_path / "preprocess")
    assert info["spec"]["isize"] == 32 and info["head_size"] == [64, 96]
    example = next(iter(records.read_split(run_path / "preprocess", "test")))
    assert example["image"].shape == (32, 32, 1) and example["head_image"].shape == (64, 96, 1)
    assert example["mask"].shape == (64, 96) and example["roi"].shape == (64, 96)


def test_the_saved_model_maps_at_the_heads_size_as_the_scorer_did(large_head_run):
    config, run_path = large_head_run
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(4)
    files = [open(p, "rb").read() for p in scores["path"]]
    served = tf.saved_model.load(str(run_path / "export" / "ganomaly" / "1"))
    out = served.signatures["serving_bytes"](encoded=tf.constant(files))
    assert out["anomaly_map"].shape == (4, 64, 96)
    np.testing.assert_allclose(out["score"].numpy(), scores["score"], rtol=1e-4, atol=1e-4)
    card_file = run_path / "export" / "ganomaly" / "1" / "assets" / "ganomaly.json"
    card = json.loads(card_file.read_text())
    assert card["map_size"] == [64, 96] and card["head_size"] == [64, 96]
    # The map itself: the scorer on the preprocessed records, the SavedModel on the files.
    config = records.with_resolved_spec(config, run_path / "preprocess")
    scorer = modeling.load_scorer(config, run_path / "train", run_path / "evaluate")
    test = records.read_split(run_path / "preprocess", "test").take(4).batch(4)
    expected = scorer.score(records.model_inputs(next(iter(test))))["anomaly_map"]
    np.testing.assert_allclose(out["anomaly_map"].numpy(), expected, rtol=1e-3, atol=1e-3)
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0


def test_labelled_defects_are_transplanted_at_the_heads_size_onto_clean_hosts():
    from components.train_data import _transplanted_pair

    images, head_images = tf.zeros([4, 8, 8, 1]), tf.zeros([4, 16, 16, 1])
    head_images = head_images + tf.reshape([-1.0, -0.5, 0.5, 1.0], [4, 1, 1, 1])
    synthetic = tf.concat([tf.ones([3, 16, 16, 1]), tf.zeros([1, 16, 16, 1])], 0)
    batch = ((images, head_images), images, synthetic)
    mask = np.zeros([2, 16, 16, 1], np.float32)
    mask[:, 4:8, 4:8] = 1.0
    defects = (tf.fill([2, 8, 8, 1], 0.25), tf.fill([2, 16, 16, 1], 0.25))
    labelled = (defects, tf.constant(mask), tf.constant([1.0, 0.0]))
    (small, head), masks = _transplanted_pair(batch, labelled, 2, tf.constant([1, 2]))
    # The masked defect lands on the one host without a synthetic anomaly (value 1.0)...
    assert sorted(np.unique(head[0].numpy())) == [0.25, 1.0]
    assert np.sum(masks[0].numpy()) == 16 and np.all(head[0].numpy()[masks[0] > 0] == 0.25)
    # ...the generator's copy is the head's brought down; an image label is kept as given.
    expected = tf.image.resize(head[:1], [8, 8], antialias=True)
    np.testing.assert_allclose(small[:1].numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_array_equal(head[1].numpy(), defects[1][1].numpy())
    np.testing.assert_array_equal(small[1].numpy(), defects[0][1].numpy())


def test_records_of_a_square_head_from_before_head_size_still_read():
    assert records.head_size({"head_isize": 64}) == (64, 64)
    assert records.head_size({"head_size": [64, 160]}) == (64, 160)
    assert records.head_size({}) == () and records.map_grid({"spec": {"isize": 32}}) == (32, 32)
