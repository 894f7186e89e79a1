"""Native-resolution tiles: the grid, cutting and stitching, and the five stages with tiles."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from models.ganomaly import GANomaly
from models.options import ModelOptions
from models.scorer import Scorer
from models.tiling import TileGrid, map_size, tile_origins
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.records import read_split
from tests.conftest import run_all_stages, tiny_config


def _spec(**extra) -> dict:
    return {"isize": 32, "tiles": [64, 16], "tiles_image": [200, 136], **extra}


def test_tiles_cover_the_image_and_the_last_one_ends_at_its_edge():
    assert tile_origins(100, 32, 24) == (0, 24, 48, 68)
    assert tile_origins(32, 32, 24) == (0,)
    assert tile_origins(20, 32, 24) == (0,)
    grid = TileGrid.of(_spec())
    # 200 x 136 original pixels at 32 / 64 -> 100 x 68; stride (64 - 16) / 2 = 24.
    assert grid.size == (100, 68) == map_size(_spec())
    assert grid.rows == (0, 24, 48, 68) and grid.cols == (0, 24, 36)
    assert grid.count == 12
    assert grid.coverage().min() >= 1


def test_no_tiles_no_grid_and_the_map_is_the_model_input():
    assert TileGrid.of({"isize": 32, "tiles": []}) is None
    assert map_size({"isize": 32, "tiles": []}) == (32, 32)
    with pytest.raises(ValueError, match="tiles_image is not resolved"):
        map_size({"isize": 32, "tiles": [64, 0], "tiles_image": []})


def test_stitching_the_cut_tiles_gives_the_image_back():
    grid = TileGrid.of(_spec())
    images = np.random.default_rng(0).normal(size=(2, *grid.size, 3)).astype(np.float32)
    tiles = grid.cut(tf.constant(images))
    assert tuple(tiles.shape) == (2 * grid.count, 32, 32, 3)
    # Tile 5 of image 1 is row 1, column 2 of its grid.
    np.testing.assert_array_equal(tiles[grid.count + 5], images[1, 24:56, 36:68])
    np.testing.assert_allclose(grid.stitch(tiles), images, rtol=1e-6, atol=1e-6)


def test_overlapping_tiles_are_averaged():
    grid = TileGrid.of({"isize": 32, "tiles": [32, 16], "tiles_image": [48, 32]})
    assert grid.rows == (0, 16) and grid.cols == (0,)
    values = tf.constant([1.0, 3.0])[:, None, None, None] * tf.ones([2, 32, 32, 1])
    stitched = grid.stitch(values).numpy()[0, :, 0, 0]
    np.testing.assert_array_equal(stitched, [1.0] * 16 + [2.0] * 16 + [3.0] * 16)


def test_a_tiled_scorer_maps_each_tile_where_it_lies():
    grid = TileGrid.of({"isize": 32, "tiles": [32, 0], "tiles_image": [64, 32]})
    model = GANomaly(isize=32, channels=1, options=ModelOptions(nz=8, ngf=8, ndf=8), seed=0)
    tiled = Scorer(model, {"kind": "residual"}, grid=grid)
    whole = Scorer(model, {"kind": "residual"})
    images = tf.random.stateless_uniform([1, 64, 32, 1], [1, 2], -1.0, 1.0)
    out = tiled.raw_scores(images)
    assert tuple(out["residual"].shape) == (1, 64, 32)
    bottom = whole.raw_scores(images[:, 32:])
    np.testing.assert_allclose(out["residual"][:, 32:], bottom["residual"], rtol=1e-5, atol=1e-6)
    top = whole.raw_scores(images[:, :32])
    latent = np.maximum(top["latent"], bottom["latent"])
    np.testing.assert_allclose(out["latent"], latent, rtol=1e-5)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("preprocess.tiles=[64]", "is not [side, overlap]"),
        ("preprocess.tiles=[64, 64]", "0 <= overlap < side"),
        ("preprocess.tiles=[64, 8.5]", "is not [side, overlap]"),
        ("preprocess.tiles_image=[0, 10]", "is not [height, width]"),
        ("preprocess.resize=letterbox", "does not go with tiles"),
    ],
)
def test_bad_tile_settings_are_one_line_errors(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        load_config(None, ["preprocess.tiles=[64, 16]", override])
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory, mlflow_uri, data_dir):
    """The five stages on the 64-px valve seats in 32-px tiles, with CLAHE and the circle ROI."""
    config = tiny_config(
        "preprocess.tiles=[32, 8]",
        "preprocess.clahe=true",
        "preprocess.roi=circle",
        "preprocess.roi_inner=0.2",
        "train.epochs=1",
    )
    return config, run_all_stages(tmp_path_factory, config, "tiled")


@pytest.mark.slow
def test_preprocess_keeps_the_whole_image_at_native_resolution(tiled_run):
    _, run_path = tiled_run
    spec = json.loads((run_path / "preprocess" / "preprocess.json").read_text())["spec"]
    assert spec["tiles_image"] == [64, 64]  # resolved from the training images
    example = next(iter(read_split(run_path / "preprocess", "test")))
    assert example["image"].shape == (64, 64, 1) and example["roi"].shape == (64, 64)
    roi = example["roi"].numpy().astype(bool)
    assert 0.2 < roi.mean() < 0.8 and not roi[0, 0] and not roi[32, 32]


@pytest.mark.slow
def test_training_steps_over_the_tiles(tiled_run):
    _, run_path = tiled_run
    history = pd.read_csv(run_path / "train" / "history.csv")
    summary = json.loads((run_path / "train" / "train.json").read_text())
    assert len(history) == 1
    # 36 training images, 3 x 3 tiles each (stride 24, the last at 32), batches of 16.
    assert summary["steps_per_epoch"] == -(-36 * 9 // 16)


@pytest.mark.slow
def test_evaluate_and_the_saved_model_score_whole_images(tiled_run):
    _, run_path = tiled_run
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(4)
    files = [open(p, "rb").read() for p in scores["path"]]
    served = tf.saved_model.load(str(run_path / "export" / "ganomaly" / "1"))
    out = served.signatures["serving_bytes"](encoded=tf.constant(files))
    np.testing.assert_allclose(out["score"].numpy(), scores["score"], rtol=1e-4, atol=1e-4)
    assert out["anomaly_map"].shape == (4, 64, 64)
    # A full frame of another size is squashed to the same grid; outside the ROI the map is 0.
    frame = np.asarray(Image.open(scores["path"][0]), np.float32)
    frame = tf.image.resize(frame[None, ..., None], (80, 96)).numpy().clip(0, 255)
    got = served.signatures["serving_default"](images=tf.constant(frame))
    assert got["anomaly_map"].shape == (1, 64, 64)
    assert got["anomaly_map"][0, 0, 0] == 0.0
    card_file = run_path / "export" / "ganomaly" / "1" / "assets" / "ganomaly.json"
    assert json.loads(card_file.read_text())["map_size"] == [64, 64]


@pytest.mark.slow
def test_suspects_are_whole_training_images_scored_as_served(tiled_run):
    _, run_path = tiled_run
    suspects = pd.read_csv(run_path / "evaluate" / "suspects.csv")
    assert len(suspects) == 36 + 12  # the training and validation normals, not their tiles
    top = suspects.head(4)
    files = [open(p, "rb").read() for p in top["path"]]
    served = tf.saved_model.load(str(run_path / "export" / "ganomaly" / "1"))
    out = served.signatures["serving_bytes"](encoded=tf.constant(files))
    np.testing.assert_allclose(out["score"].numpy(), top["score"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_regions_are_boxed_in_original_pixels(tiled_run):
    _, run_path = tiled_run
    regions = pd.read_csv(run_path / "evaluate" / "regions.csv")
    assert len(regions) > 0
    assert regions["y1"].max() <= 64 and regions["x1"].max() <= 64


def test_tiles_image_defaults_to_the_training_images_median_size():
    from components.preprocess import resolve

    manifest = pd.DataFrame(
        {
            "split": ["train"] * 5 + ["test"],
            "height": [100, 120, 300, 130, 90, 2000],
            "width": [50, 61, 70, 80, 400, 2000],
            "channels": [1] * 6,
        }
    )
    spec = resolve({"isize": 32, "channels": 1, "tiles": [64, 16], "tiles_image": []}, manifest)
    assert spec["tiles_image"] == [120, 70]  # the test image is not counted
    given = {"isize": 32, "channels": "auto", "tiles": [64, 0], "tiles_image": [90, 90]}
    chosen = resolve(given, manifest)
    assert chosen["tiles_image"] == [90, 90] and chosen["channels"] == 1


def test_a_stitched_map_of_another_aspect_goes_back_onto_the_whole_image():
    from components.localize import full_size

    amap = np.zeros((50, 34))
    amap[10:20, 30:] = 5.0  # a hot spot at the right edge of the map
    full = full_size(amap, (200, 136))
    assert full.shape == (200, 136) and not np.isnan(full).any()
    hot = np.argwhere(full > 2.5)
    assert hot[:, 0].min() >= 36 and hot[:, 0].max() <= 84 and hot[:, 1].min() >= 116
    # A wide map: its columns beyond the height are part of the image too.
    wide = full_size(amap.T, (136, 200))
    assert wide.shape == (136, 200) and not np.isnan(wide).any()
    np.testing.assert_allclose(wide, full.T)
