"""Synthetic anomalies pasted onto normal training images (a pure TensorFlow function).

    from models.anomalies import corrupt
    corrupted, masks = corrupt(images, probability=0.5, seed=(1, 2))

Training the generator to map a corrupted normal image back to the clean one
(the contextual loss is taken against the clean image) teaches it to repair
rather than copy what it has not seen: at test time a real defect is not
reproduced, and the residual lights up where it is. The shapes are blobs of
thresholded smooth noise (Perlin-like, as in DRAEM) filled with a patch of
another image of the batch, a brightness shift or noise.
"""

from __future__ import annotations

import tensorflow as tf

# Side of the coarse noise grid that is upsampled into blob shapes.
NOISE_GRID = (4, 8)


def _stateless(shape, seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def blob_masks(batch: int, size: int, seed) -> tf.Tensor:
    """``[B, size, size, 1]`` soft masks of one to a few blobs, 0.5-12% of the image."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    grid = NOISE_GRID[0] + tf.cast(_stateless([], seeds[0]) * 2, tf.int32) * 4
    noise = _stateless(tf.stack([batch, grid, grid, 1]), seeds[1])
    smooth = tf.image.resize(noise, (size, size), method="bicubic")
    # Keep a random small share of the pixels: a high quantile of each map.
    share = _stateless([batch, 1, 1, 1], seeds[2], 0.005, 0.12)
    flat = tf.reshape(smooth, (batch, -1))
    ranked = tf.sort(flat, axis=-1, direction="DESCENDING")
    cut = tf.cast(share[:, 0, 0, 0] * tf.cast(size * size, tf.float32), tf.int32)
    level = tf.gather(ranked, tf.maximum(cut, 1), axis=1, batch_dims=1)
    hard = tf.cast(smooth >= level[:, None, None, None], tf.float32)
    # Slightly soft edges, so the network cannot key on a hard outline.
    return tf.nn.avg_pool2d(hard, 3, 1, "SAME")


def _fills(images: tf.Tensor, seed) -> tf.Tensor:
    """What goes inside the blobs: another image, a brightness shift or noise."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    batch = tf.shape(images)[0]
    other = tf.roll(tf.image.flip_left_right(images), shift=1, axis=0)
    shift = _stateless([batch, 1, 1, 1], seeds[0], 0.2, 0.8)
    sign = tf.where(_stateless([batch, 1, 1, 1], seeds[1]) < 0.5, -1.0, 1.0)
    shifted = images + sign * shift
    noise = images + _stateless(tf.shape(images), seeds[2], -0.6, 0.6)
    choice = _stateless([batch, 1, 1, 1], seeds[3])
    fill = tf.where(choice < 1 / 3, other, tf.where(choice < 2 / 3, shifted, noise))
    return tf.clip_by_value(fill, -1.0, 1.0)


def corrupt(images: tf.Tensor, probability: float, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Pastes synthetic anomalies onto a share of the images.

    Args:
        images: ``[B, S, S, C]`` in [-1, 1].
        probability: share of the images that get an anomaly.
        seed: a stateless seed, shape ``[2]`` int.

    Returns:
        ``(corrupted images, masks [B, S, S, 1])``; masks are 0 where untouched.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    batch, size = tf.shape(images)[0], images.shape[1]
    masks = blob_masks(batch, size, seeds[0])
    chosen = tf.cast(_stateless([batch, 1, 1, 1], seeds[1]) < probability, tf.float32)
    opacity = _stateless([batch, 1, 1, 1], seeds[2], 0.5, 1.0)
    masks = masks * chosen * opacity
    corrupted = images * (1.0 - masks) + _fills(images, seeds[3]) * masks
    return corrupted, masks
