"""Synthetic anomalies for repair training, and the skip-connection generator."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models.anomalies import blob_masks, corrupt
from models.networks import build_generator


def _images(batch=6, size=32):
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(-0.5, 0.5, (batch, size, size, 1)).astype("float32"))


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
