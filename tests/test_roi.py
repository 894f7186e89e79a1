"""Circle finding and ROI masks on synthetic rings with known geometry."""

import numpy as np
import pytest
import tensorflow as tf

from models.roi import annulus_mask, box_mask, find_circle


def _ring(size, cy, cx, outer, inner, noise=0.08, seed=0):
    """A bright annulus on a dark background plus Gaussian noise, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(yy - cy, xx - cx)
    img = 0.15 + 0.6 * ((dist <= outer) & (dist >= inner)) + rng.normal(0, noise, (size, size))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


CASES = [
    (64, 32.0, 32.0, 20.0, 10.0),
    (64, 29.3, 35.6, 16.4, 9.0),
    (64, 33.5, 30.2, 24.7, 0.0),  # a full disc
    (128, 64.0, 64.0, 45.0, 25.0),
    (128, 58.4, 70.7, 37.3, 22.1),
    (128, 69.8, 61.1, 50.6, 35.0),
]


@pytest.mark.parametrize("size, cy, cx, outer, inner", CASES)
def test_finds_the_outer_circle(size, cy, cx, outer, inner):
    img = _ring(size, cy, cx, outer, inner, seed=int(outer * 10))
    found_y, found_x, found_r = (v.numpy()[0] for v in find_circle(img[None], 0.15, 0.45))
    assert abs(found_y - cy) <= 1.5
    assert abs(found_x - cx) <= 1.5
    assert abs(found_r - outer) <= 2.0


def test_batch_of_two_different_circles():
    batch = np.stack([_ring(128, 50.0, 75.0, 30.0, 15.0), _ring(128, 70.0, 60.0, 48.0, 30.0)])
    cy, cx, r = (v.numpy() for v in find_circle(tf.constant(batch), 0.15, 0.45))
    np.testing.assert_allclose(cy, [50.0, 70.0], atol=1.5)
    np.testing.assert_allclose(cx, [75.0, 60.0], atol=1.5)
    np.testing.assert_allclose(r, [30.0, 48.0], atol=2.0)


def test_find_circle_in_tf_function_with_dynamic_batch():
    fn = tf.function(
        lambda g: find_circle(g, 0.15, 0.45, num_radii=12),
        input_signature=[tf.TensorSpec([None, 64, 64], tf.float32)],
    )
    for count in (1, 3):
        batch = np.stack([_ring(64, 32.0, 31.0, 20.0, 12.0, seed=s) for s in range(count)])
        cy, cx, r = fn(tf.constant(batch))
        assert cy.shape == cx.shape == r.shape == (count,)
        np.testing.assert_allclose(cy.numpy(), 32.0, atol=1.5)
        np.testing.assert_allclose(cx.numpy(), 31.0, atol=1.5)
        np.testing.assert_allclose(r.numpy(), 20.0, atol=2.0)


def test_annulus_mask_area():
    cy, cx, r = tf.constant([64.0, 60.3]), tf.constant([64.0, 70.8]), tf.constant([40.0, 30.0])
    mask = annulus_mask((128, 128), cy, cx, r, inner=0.5, outer=1.2).numpy()
    assert mask.shape == (2, 128, 128, 1)
    assert set(np.unique(mask)) == {0.0, 1.0}
    for area, radius in zip(mask.sum(axis=(1, 2, 3)), [40.0, 30.0]):
        expected = np.pi * ((1.2 * radius) ** 2 - (0.5 * radius) ** 2)
        assert abs(area - expected) / expected < 0.03


def test_annulus_mask_in_tf_function_with_dynamic_batch():
    spec = tf.TensorSpec([None], tf.float32)
    fn = tf.function(
        lambda cy, cx, r: annulus_mask((64, 64), cy, cx, r, 0.0, 1.0),
        input_signature=[spec, spec, spec],
    )
    mask = fn(tf.constant([32.0]), tf.constant([32.0]), tf.constant([10.0])).numpy()
    assert mask.shape == (1, 64, 64, 1)
    assert mask[0, 32, 32, 0] == 1.0 and mask[0, 32, 43, 0] == 0.0


def test_box_mask():
    mask = box_mask((64, 128), (0.25, 0.5, 0.75, 1.0)).numpy()
    assert mask.shape == (1, 64, 128, 1)
    assert mask.sum() == 32 * 64
    assert mask[0, 16, 64, 0] == 1.0 and mask[0, 15, 64, 0] == 0.0 and mask[0, 16, 63, 0] == 0.0
