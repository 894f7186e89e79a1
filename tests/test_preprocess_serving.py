"""The preprocessing of the pipeline and of the SavedModel are the same computation.

The preprocess stage decodes files with Pillow and runs ``models.preprocessing.preprocess``
one image at a time; a served model decodes the bytes with TensorFlow and runs the same
function on a whole batch. With CLAHE and a circular ROI switched on, both must give the
same tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from models.decoding import decode
from models.preprocessing import preprocess, resize_mask
from pipeline.cli import run_stage
from pipeline.core.records import read_split
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

ROI_OVERRIDES = [
    "data.synthetic_train=8",
    "data.synthetic_test=2",
    "preprocess.clahe=true",
    "preprocess.roi=circle",
    "preprocess.roi_radius_range=[0.3,0.5]",
    "preprocess.roi_inner=0.2",
    "preprocess.roi_outer=1.05",
]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, mlflow_uri, data_dir):
    """ingest -> preprocess of tiny 64x64 valve seats with CLAHE and a circular ROI."""
    config = tiny_config(*ROI_OVERRIDES)
    assert config.preprocess.isize == 32 and config.data.synthetic_size == 64
    run_path = tmp_path_factory.mktemp("roi-artifacts") / "roi"
    for stage in ("ingest", "preprocess"):
        run_stage(stage, config, "roi", run_path)
    out = run_path / "preprocess"
    spec = json.loads((out / "preprocess.json").read_text())["spec"]
    records = [ex for split in ("train", "val", "test") for ex in read_split(out, split)]
    return config, spec, records, out


def _serving_module(spec: dict) -> tf.Module:
    """A SavedModel-able module with the export's two entry points, preprocessing only."""
    channels = spec["channels"]

    class Preprocessing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
        def from_bytes(self, encoded):
            images = tf.map_fn(
                lambda e: tf.cast(decode(e, channels), tf.float32),
                encoded,
                fn_output_signature=tf.TensorSpec([None, None, channels], tf.float32),
            )
            images, roi = preprocess(images, spec)
            return {"images": images, "roi": roi}

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, name="raw")]
        )
        def from_images(self, raw):
            images, roi = preprocess(raw, spec)
            return {"images": images, "roi": roi}

    return Preprocessing()


def test_savedmodel_preprocessing_matches_the_tfrecords(preprocessed, tmp_path):
    _, spec, records, _ = preprocessed
    assert len(records) == 18  # 8 train/val normals + 2 test normals + 2 of each of 4 defects
    module = _serving_module(spec)
    signatures = {
        "serving_bytes": module.from_bytes.get_concrete_function(),
        "serving_default": module.from_images.get_concrete_function(),
    }
    tf.saved_model.save(module, str(tmp_path / "preprocessing"), signatures=signatures)
    served = tf.saved_model.load(str(tmp_path / "preprocessing")).signatures

    paths = [ex["path"].numpy().decode() for ex in records]
    expected = np.stack([ex["image"].numpy() for ex in records])
    expected_roi = np.stack([ex["roi"].numpy() for ex in records])
    encoded = tf.constant([Path(p).read_bytes() for p in paths])
    # All images in one batch: per-image steps (CLAHE, circle finding) must not mix them.
    from_bytes = served["serving_bytes"](encoded=encoded)
    raw = np.stack([np.asarray(Image.open(p), np.float32)[..., None] for p in paths])
    from_images = served["serving_default"](raw=tf.constant(raw))
    for out in (from_bytes, from_images):
        images, roi = out["images"].numpy(), out["roi"].numpy()[..., 0]
        assert images.shape == expected.shape == (18, 32, 32, 1)
        assert np.abs(images - expected).max() < 1e-5
        np.testing.assert_array_equal(roi.astype(np.uint8), expected_roi)


def test_roi_blanks_the_outside_and_clahe_changes_the_image(preprocessed):
    _, spec, records, _ = preprocessed
    images = np.stack([ex["image"].numpy()[..., 0] for ex in records])
    roi = np.stack([ex["roi"].numpy() for ex in records]).astype(bool)
    # Outside the annulus every pixel is exactly -1 (black); inside it is not all black.
    assert (images[~roi] == -1.0).all()
    assert (images[roi] > -1.0).mean() > 0.9
    for mask in roi:
        assert not mask[0, 0] and not mask[-1, -1] and not mask[0, -1] and not mask[-1, 0]
        assert not mask[15:17, 15:17].any(), "the bore (inner 0.2 of the radius) is blanked"
        # The seat's outer edge is at about 0.4 * 32 = 12.8 px: the ring covers most of it.
        assert 0.25 < mask.mean() < 0.7

    raw = np.stack(
        [
            np.asarray(Image.open(ex["path"].numpy().decode()), np.float32)[..., None]
            for ex in records
        ]
    )
    plain, plain_roi = preprocess(tf.constant(raw), {**spec, "clahe": False})
    plain = plain.numpy()[..., 0]
    inside = roi & plain_roi.numpy()[..., 0].astype(bool)
    assert np.abs(plain[inside] - images[inside]).mean() > 0.05


def test_exported_archive_scores_the_images_the_pipeline_wrote(preprocessed, tmp_path):
    """The real export (untrained weights) replays the same preprocessing before scoring.

    And the same measurement: the circle the ROI found is among the input statistics.
    """
    import pandas as pd

    from components.export import input_reference
    from models.serving import serving_archive
    from pipeline.core import modeling

    config, spec, records, out = preprocessed
    records = records[:6]
    scorer = modeling.build_scorer(config, modeling.build_model(config))
    reference = input_reference(out)
    archive, _ = serving_archive(scorer, spec, 0.0, reference)
    archive.write_out(str(tmp_path / "model"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_bytes"]
    encoded = tf.constant([Path(ex["path"].numpy().decode()).read_bytes() for ex in records])
    got = served(encoded=encoded)
    images = tf.constant(np.stack([ex["image"].numpy() for ex in records]))
    want = scorer.score(images)
    np.testing.assert_allclose(got["score"].numpy(), want["score"].numpy(), rtol=1e-4, atol=1e-4)
    roi = np.stack([ex["roi"].numpy() for ex in records]).astype(bool)
    served_map = got["anomaly_map"].numpy()
    assert (served_map[~roi] == 0.0).all()
    np.testing.assert_allclose(served_map, want["anomaly_map"].numpy() * roi, rtol=1e-4, atol=1e-4)
    measured = pd.read_csv(out / "input_statistics.csv").set_index("path")
    paths = [ex["path"].numpy().decode() for ex in records]
    assert reference["names"][-3:] == ["roi_radius", "roi_centre_y", "roi_centre_x"]
    expected = measured.loc[paths, reference["names"]].to_numpy()
    np.testing.assert_allclose(got["input_statistics"].numpy(), expected, rtol=1e-4, atol=1e-4)


# 10. letterbox and center_crop ------------------------------------------------------------------


def _wide_png(path: Path) -> Path:
    """A 40x64 (H x W) image: bright 200 body, a white 12-px band on each side."""
    pixels = np.full((40, 64), 200, np.uint8)
    pixels[:, :12] = 255
    pixels[:, -12:] = 255
    pixels[10:30, 24:40] = 50  # a dark block in the middle
    Image.fromarray(pixels).save(path)
    return path


def _spec(resize: str) -> dict:
    return tiny_config(f"preprocess.resize={resize}").to_dict()["preprocess"]


def test_letterbox_pads_a_wide_image_with_black(tmp_path):
    path = _wide_png(tmp_path / "wide.png")
    raw = tf.cast(decode(tf.constant(path.read_bytes()), 1), tf.float32)[None]
    images, roi = preprocess(raw, _spec("letterbox"))
    image = images.numpy()[0, ..., 0]
    assert images.shape == (1, 32, 32, 1) and roi.shape == (1, 32, 32, 1)
    # 64 wide -> 32, so 40 high -> 20 rows with 6 padding rows above and below.
    np.testing.assert_array_equal(image[:6], -1.0)
    np.testing.assert_array_equal(image[-6:], -1.0)
    assert (image[7:25] > 0.0).mean() > 0.7  # the (bright) content is all there
    assert image[7:25].min() < -0.3  # the dark block survived, scaled
    # Its ground-truth mask goes through the same geometry.
    mask = np.zeros((40, 64), np.float32)
    mask[10:30, 24:40] = 1.0
    small = resize_mask(mask, _spec("letterbox"))
    assert small.shape == (32, 32)
    assert not small[:6].any() and not small[-6:].any()
    content = image[6:26]
    np.testing.assert_array_equal(small[6:26].astype(bool), content < -0.2)
    assert small.sum() > 0


def test_center_crop_keeps_the_middle_square(tmp_path):
    path = _wide_png(tmp_path / "wide.png")
    raw = tf.cast(decode(tf.constant(path.read_bytes()), 1), tf.float32)[None]
    images, _ = preprocess(raw, _spec("center_crop"))
    image = images.numpy()[0, ..., 0]
    assert images.shape == (1, 32, 32, 1)
    # The crop is columns 12..51: the white side bands are gone, no padding either.
    assert image.max() < 200 / 127.5 - 1.0 + 0.02
    assert image.min() > -1.0
    squashed = preprocess(raw, _spec("squash"))[0].numpy()[0, ..., 0]
    assert squashed.max() > 0.99  # squash keeps the white bands that the crop removed
    # The dark block (rows 10..29, columns 24..39 -> crop columns 12..27) lands in the middle.
    dark = image < -0.2
    assert dark[8:24, 10:22].mean() > 0.8 and not dark[:6].any() and not dark[:, :8].any()
    mask = np.zeros((40, 64), np.float32)
    mask[10:30, 24:40] = 1.0
    small = resize_mask(mask, _spec("center_crop"))
    assert small.shape == (32, 32)
    np.testing.assert_array_equal(small.astype(bool), dark)
