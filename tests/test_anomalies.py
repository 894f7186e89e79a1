"""Synthetic anomalies (repair training, the defect head), and the skip-connection generator."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.anomalies import KINDS, blob_masks, corrupt, gallery, kind_masks_and_fills, transplant
from models.networks import build_generator


def _images(batch=6, size=32, width=None):
    rng = np.random.default_rng(0)
    shape = (batch, size, width or size, 1)
    return tf.constant(rng.uniform(-0.5, 0.5, shape).astype("float32"))


def test_blob_masks_cover_a_small_share_of_each_image():
    masks = blob_masks(8, 32, tf.constant([3, 4], tf.int64)).numpy()
    assert masks.shape == (8, 32, 32, 1)
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    covered = (masks > 0.5).mean(axis=(1, 2, 3))
    # 0.5-12% of the pixels are chosen; the 3x3 softening shrinks or grows them a little.
    assert (covered > 0.0).all() and (covered < 0.2).all()


def test_corrupt_changes_only_the_masked_pixels():
    images = _images()
    corrupted, masks = corrupt(images, probability=1.0, seed=tf.constant([1, 2], tf.int64))
    corrupted, masks, images = corrupted.numpy(), masks.numpy(), images.numpy()
    untouched = masks == 0
    np.testing.assert_array_equal(corrupted[untouched], images[untouched])
    changed = np.abs(corrupted - images) > 1e-6
    assert changed.any()
    assert not (changed & untouched).any()
    assert corrupted.min() >= -1.0 and corrupted.max() <= 1.0


def test_corrupt_is_seeded_and_respects_the_probability():
    images = _images(batch=64)
    a, _ = corrupt(images, 0.5, tf.constant([7, 8], tf.int64))
    b, _ = corrupt(images, 0.5, tf.constant([7, 8], tf.int64))
    c, _ = corrupt(images, 0.5, tf.constant([9, 8], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    _, none = corrupt(images, 0.0, tf.constant([7, 8], tf.int64))
    assert float(tf.reduce_max(none)) == 0.0
    _, half = corrupt(images, 0.5, tf.constant([7, 8], tf.int64))
    share = float(tf.reduce_mean(tf.cast(tf.reduce_max(half, axis=(1, 2, 3)) > 0, tf.float32)))
    assert 0.25 < share < 0.75


def test_skip_generator_shapes_and_its_skips_carry_detail():
    for isize in (32, 48):
        generator = build_generator(isize, 1, nz=8, ngf=8, skip_connections=True)
        reconstruction, latent_i, latent_o = generator(_images(2, isize))
        assert reconstruction.shape == (2, isize, isize, 1)
        assert latent_i.shape == (2, 8) and latent_o.shape == (2, 8)
    # One concatenation per decoder level (48: 24, 12, 6 -> three levels).
    names = [layer.name for layer in generator.layers]
    assert "encoder1_decoder" in names
    inner = generator.get_layer("encoder1_decoder")
    assert sum(isinstance(layer, keras.layers.Concatenate) for layer in inner.layers) >= 3


# The kinds of synthetic anomaly -----------------------------------------------------------


def _kinds(batch=16, size=32, seed=(5, 6), width=None):
    images = _images(batch, size, width)
    kinds = kind_masks_and_fills(images, tf.constant(seed, tf.int64))
    return images, {k: (m.numpy(), f.numpy()) for k, (m, f) in kinds.items()}


@pytest.mark.parametrize("size", [(32, 32), (32, 80), (80, 32)])  # a long frame's head
def test_every_kind_marks_each_image_and_changes_only_its_mask(size):
    images, kinds = _kinds(size=size[0], width=size[1])
    assert tuple(kinds) == KINDS
    for kind, (masks, fills) in kinds.items():
        assert masks.shape == (16, *size, 1) and fills.shape == (16, *size, 1), kind
        assert masks.min() >= 0.0 and masks.max() <= 1.0, kind
        assert (masks.max(axis=(1, 2, 3)) > 0.5).all(), kind  # every image gets one
        pasted = images.numpy() * (1 - masks) + np.clip(fills, -1, 1) * masks
        untouched = masks == 0
        np.testing.assert_array_equal(pasted[untouched], images.numpy()[untouched])


def test_the_kinds_have_the_shapes_of_real_defects():
    _, kinds = _kinds(batch=32)
    share = {k: (m > 0.5).mean(axis=(1, 2, 3)) for k, (m, _) in kinds.items()}
    # Diffuse regions are large, cracks thin and spots small.
    assert np.median(share["diffuse"]) > 2 * np.median(share["patch"])
    assert share["crack"].max() < 0.08 and share["spots"].max() < 0.08
    crack = kinds["crack"][0][..., 0] > 0.5
    # A crack is long for its area: its extent is several times its width.
    rows, cols = np.nonzero(crack[0])
    assert max(np.ptp(rows), np.ptp(cols)) >= 5 and crack[0].sum() < 6 * max(
        np.ptp(rows), np.ptp(cols)
    )
    # Edge cut-outs touch the image border; their fill is black.
    edge_masks, edge_fills = kinds["edge"]
    border = np.zeros((32, 32), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert (edge_masks[..., 0][:, border] > 0.5).any(axis=1).all()
    assert (edge_fills == -1.0).all()


def test_on_a_long_frame_the_kinds_reach_every_part_and_keep_their_size():
    _, kinds = _kinds(batch=64, size=32, width=96)
    # Spots and crack starts are spread over the whole length, not its first square.
    spots = kinds["spots"][0][..., 0] > 0.5
    assert spots[:, :, 64:].any() and spots[:, :, :32].any()
    # Sizes follow the short side: a spot is no larger than on the 32-px square.
    _, square = _kinds(batch=64, size=32)
    assert (spots.sum(axis=(1, 2)).max()) <= 1.5 * (square["spots"][0] > 0.5).sum(
        axis=(1, 2, 3)
    ).max()
    edge = kinds["edge"][0][..., 0] > 0.5
    assert edge[:, :, -1].any() and edge[:, -1, :].any()  # the far side and the bottom


def test_corrupt_uses_every_kind_and_is_seeded():
    images = _images(batch=64)
    a, masks = corrupt(images, 1.0, tf.constant([1, 1], tf.int64))
    b, _ = corrupt(images, 1.0, tf.constant([1, 1], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    share = (masks.numpy() > 0.3).mean(axis=(1, 2, 3))
    # Both large (diffuse) and tiny (cracks, spots) anomalies among 64 images.
    assert share.max() > 0.1 and share.min() < 0.03


def test_gallery_shows_each_kind_its_image_and_its_mask(tmp_path):
    images = _images(batch=3, size=32)  # fewer images than kinds: they repeat
    picture = gallery(images, tf.constant([0, 0], tf.int64)).numpy()
    assert picture.dtype == np.uint8 and picture.shape == (3 * 32, len(KINDS) * 32, 1)
    clean = picture[:32, :32, 0].astype(float) / 127.5 - 1
    np.testing.assert_allclose(clean, images.numpy()[0, ..., 0], atol=1 / 127)
    masks = picture[64:, :, 0]
    assert set(np.unique(masks)) > {0}  # each kind's mask is drawn
    for k in range(len(KINDS)):
        assert masks[:, 32 * k : 32 * (k + 1)].max() > 127, KINDS[k]


def test_transplant_moves_each_masked_defect_onto_its_host_with_its_mask():
    hosts, defects = _images(batch=4), 0.4 - _images(batch=4)  # both in [-1, 1]
    masks = np.zeros((4, 32, 32, 1), "float32")
    masks[:, 2:5, 3:9] = 1.0
    seed = tf.constant([5, 6], tf.int64)
    has_mask = tf.constant([1, 1, 1, 0.0])
    pasted, moved = transplant(hosts, defects, tf.constant(masks), has_mask, seed)
    pasted, moved, hosts, defects = pasted.numpy(), moved.numpy(), hosts.numpy(), defects.numpy()
    for i in range(3):
        inside = moved[i, ..., 0] > 0.5
        assert inside.sum() == 18  # the whole defect, moved, not cut
        np.testing.assert_array_equal(pasted[i][~inside], hosts[i][~inside])
        # The defect's own pixels, rolled: the same values where the rolled mask says.
        shift = np.argwhere(inside)[0] - np.array([2, 3])
        rolled = np.roll(defects[i], tuple(shift), (0, 1))
        np.testing.assert_array_equal(pasted[i][inside], rolled[inside])
    assert len({tuple(np.argwhere(moved[i, ..., 0] > 0.5)[0]) for i in range(3)}) > 1
    # An image label (no mask) is left as it was, in its own image.
    np.testing.assert_array_equal(pasted[3], defects[3])
    np.testing.assert_array_equal(moved[3], masks[3])
