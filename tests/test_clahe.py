"""The TensorFlow CLAHE against OpenCV's, on 8-bit images of several shapes and settings."""

import numpy as np
import pytest
import tensorflow as tf

from models.clahe import clahe

cv2 = pytest.importorskip("cv2")


def _structured(height, width, seed):
    """Gradients, a stripe pattern and Gaussian noise, as uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = 0.3 * 255 * yy / height + 0.4 * 255 * xx / width + 60 * np.sin(xx / 7.0)
    img += rng.normal(0, 12, (height, width))
    return np.clip(img, 0, 255).astype(np.uint8)


def _random(height, width, seed):
    """Uniform noise in a narrow band, so the clip limit actually bites."""
    rng = np.random.default_rng(seed)
    return rng.integers(90, 140, (height, width)).astype(np.uint8)


def _ours(batch_u8, clip_limit, tile_grid):
    images = tf.constant(batch_u8[..., None] / 255.0, tf.float32)
    out = clahe(images, clip_limit, tile_grid).numpy()[..., 0]
    return np.round(out * 255.0)


def _opencv(batch_u8, clip_limit, tile_grid):
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    return np.stack([op.apply(img) for img in batch_u8]).astype(np.float64)


@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (100, 75)])
@pytest.mark.parametrize("clip_limit, tile_grid", [(3.0, 8), (2.0, 4), (40.0, 8), (0.0, 5)])
def test_matches_opencv(shape, clip_limit, tile_grid):
    # (100, 75) is not divisible by the grid: exercises OpenCV's reflect-101 padding.
    batch = np.stack([_structured(*shape, seed=1), _random(*shape, seed=2)])
    diff = np.abs(_ours(batch, clip_limit, tile_grid) - _opencv(batch, clip_limit, tile_grid))
    assert diff.mean() < 0.05
    assert diff.max() <= 1


def test_colour_is_per_channel():
    channels = [_structured(64, 64, seed=s) for s in range(3)]
    rgb = np.stack(channels, axis=-1)[None] / 255.0
    out = np.round(clahe(tf.constant(rgb, tf.float32)).numpy()[0] * 255.0)
    for c in range(3):
        ref = _opencv(channels[c][None], 3.0, 8)[0]
        assert np.abs(out[..., c] - ref).max() <= 1


def test_constant_image_stays_constant():
    images = tf.fill([2, 64, 64, 1], 0.4)
    out = clahe(images).numpy()
    assert np.ptp(out) < 1e-6
    assert np.all((out >= 0.0) & (out <= 1.0))


def test_runs_in_tf_function_with_dynamic_batch():
    fn = tf.function(
        lambda x: clahe(x, 3.0, 8),
        input_signature=[tf.TensorSpec([None, 96, 128, 1], tf.float32)],
    )
    batch = np.stack([_structured(96, 128, seed=s) for s in range(3)])
    for size in (1, 3):
        out = fn(tf.constant(batch[:size, ..., None] / 255.0, tf.float32))
        assert out.shape == (size, 96, 128, 1)
        ref = _opencv(batch[:size], 3.0, 8)
        assert np.abs(np.round(out.numpy()[..., 0] * 255.0) - ref).max() <= 1


def test_deterministic():
    images = tf.constant(_structured(64, 64, seed=3)[None, ..., None] / 255.0, tf.float32)
    np.testing.assert_array_equal(clahe(images).numpy(), clahe(images).numpy())
