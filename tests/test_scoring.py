"""models.scoring on small hand-made tensors."""

import math

import numpy as np
import pytest
from keras import ops

from models import scoring
from models.options import MAPS_OF_KIND, SCORE_KINDS


def _np(tensor) -> np.ndarray:
    return ops.convert_to_numpy(tensor)


def _t(values):
    return ops.convert_to_tensor(np.asarray(values, dtype="float32"))


def test_latent_distance_by_hand():
    latent_i = _t([[1.0, 2.0], [0.0, 0.0]])
    latent_o = _t([[1.0, 0.0], [3.0, 4.0]])
    # row 0: (0 + 4) / 2 = 2; row 1: (9 + 16) / 2 = 12.5
    np.testing.assert_allclose(_np(scoring.latent_distance(latent_i, latent_o)), [2.0, 12.5])


@pytest.mark.parametrize("sigma, size", [(0.4, 3), (1.0, 5), (1.5, 7), (2.0, 9)])
def test_gaussian_kernel_is_normalised_symmetric_and_sized(sigma, size):
    kernel = scoring.gaussian_kernel(sigma)
    assert kernel.shape == (size, size, 1, 1)
    assert kernel.dtype == np.float32
    k = kernel[:, :, 0, 0]
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, :])
    np.testing.assert_allclose(k, k[:, ::-1])
    centre = size // 2
    assert k[centre, centre] == k.max()


def test_gaussian_kernel_profile_is_gaussian():
    k = scoring.gaussian_kernel(1.0)[:, :, 0, 0]
    # one pixel from the centre: exp(-1/2); two pixels: exp(-2)
    assert k[2, 3] / k[2, 2] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert k[2, 4] / k[2, 2] == pytest.approx(math.exp(-2.0), rel=1e-5)
    assert k[3, 3] / k[2, 2] == pytest.approx(math.exp(-1.0), rel=1e-5)


def test_residual_map_of_identical_images_is_zero():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    amap = _np(scoring.residual_map(_t(images), _t(images), sigma=1.0))
    assert amap.shape == (2, 16, 16)
    np.testing.assert_array_equal(amap, 0.0)


def test_residual_map_without_smoothing_is_the_channel_mean_absolute_residual():
    images = np.zeros((1, 8, 8, 3), "float32")
    reconstructions = np.zeros((1, 8, 8, 3), "float32")
    images[0, 0, 0] = [0.3, -0.6, 0.9]  # |.| mean = 0.6, even on the border
    amap = _np(scoring.residual_map(_t(images), _t(reconstructions), sigma=0))
    expected = np.zeros((1, 8, 8), "float32")
    expected[0, 0, 0] = 0.6
    np.testing.assert_allclose(amap, expected, atol=1e-7)


def test_residual_map_spreads_a_bright_pixel_as_the_kernel_keeping_its_mass():
    images = np.zeros((2, 16, 16, 3), "float32")
    reconstructions = np.zeros((2, 16, 16, 3), "float32")
    images[1, 8, 7] = [0.3, 0.6, 0.9]  # channel mean 0.6, far from the borders
    amap = _np(scoring.residual_map(_t(images), _t(reconstructions), sigma=1.0))
    assert amap.shape == (2, 16, 16)
    np.testing.assert_array_equal(amap[0], 0.0)  # the other image is untouched
    assert amap[1].sum() == pytest.approx(0.6, rel=1e-5)
    # the map is 0.6 * the 5x5 kernel centred on the pixel, zero elsewhere
    expected = np.zeros((16, 16), "float32")
    expected[6:11, 5:10] = 0.6 * scoring.gaussian_kernel(1.0)[:, :, 0, 0]
    np.testing.assert_allclose(amap[1], expected, atol=1e-7)
    assert np.unravel_index(amap[1].argmax(), (16, 16)) == (8, 7)


def test_residual_map_of_a_constant_residual_stays_constant_up_to_the_border():
    # reflect padding: a zero-padded blur would darken the border
    images = np.full((1, 12, 12, 1), 0.5, "float32")
    amap = _np(scoring.residual_map(_t(images), _t(np.zeros_like(images)), sigma=1.5))
    np.testing.assert_allclose(amap, 0.5, rtol=1e-5)


def test_topk_mean_by_hand():
    maps = np.stack([np.arange(1, 17, dtype="float32").reshape(4, 4), np.zeros((4, 4), "float32")])
    maps[1, 2, 3] = 8.0
    # 25% of 16 pixels = 4: (13 + 14 + 15 + 16) / 4 = 14.5; second map (8 + 0 + 0 + 0) / 4 = 2
    np.testing.assert_allclose(_np(scoring.topk_mean(_t(maps), 0.25)), [14.5, 2.0])
    # 1% of 16 rounds to 0 pixels: at least one is kept -> the maximum
    np.testing.assert_allclose(_np(scoring.topk_mean(_t(maps), 0.01)), [16.0, 8.0])
    # all pixels: the plain mean (1 + ... + 16) / 16 = 8.5, 8 / 16 = 0.5
    np.testing.assert_allclose(_np(scoring.topk_mean(_t(maps), 1.0)), [8.5, 0.5])


def test_standardize_by_hand():
    values = _t([1.0, 3.0, 5.0])
    # (v - 3) / 2
    np.testing.assert_allclose(_np(scoring.standardize(values, 3.0, 2.0)), [-1.0, 0.0, 1.0])


def test_standardize_guards_a_zero_spread():
    out = _np(scoring.standardize(_t([1.0, 3.0]), 3.0, 0.0))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [-2.0 / scoring.MIN_STD, 0.0], rtol=1e-5)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("latent", [1.0, -2.0]),  # the latent score has no map of its own: the residual's
        ("residual", [1.0, -2.0]),
        ("ssim", [3.0, 4.0]),
        ("combined", [2.0, 1.0]),
        ("discriminator", [-5.0, 6.0]),
    ],
)
def test_kind_map_for_each_kind(kind, expected):
    maps = {"residual": _t([1.0, -2.0]), "ssim": _t([3.0, 4.0]), "discriminator": _t([-5.0, 6.0])}
    np.testing.assert_allclose(_np(scoring.kind_map(kind, maps)), expected)


def test_kind_map_rejects_an_unknown_kind_naming_it():
    maps = {name: _t([1.0]) for names in MAPS_OF_KIND.values() for name in names}
    with pytest.raises(ValueError, match="'foo'"):
        scoring.kind_map("foo", maps)


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_every_kind_makes_its_map_from_just_the_maps_it_declares(kind):
    # The scorer computes only MAPS_OF_KIND[kind]; kind_map must need nothing else.
    maps = {name: _t(np.full((1, 2, 2), i + 1.0)) for i, name in enumerate(MAPS_OF_KIND[kind])}
    out = _np(scoring.kind_map(kind, maps))
    assert out.shape == (1, 2, 2)
    assert out.mean() == pytest.approx(np.mean([i + 1.0 for i in range(len(maps))]))


def test_feature_map_is_the_channel_mean_difference_upsampled_to_the_image():
    # 2x2 maps of 3 channels; they differ by 3 at the top-left cell, by 6 (in one
    # channel) at the bottom-right: channel means 1 and 2.
    features = np.zeros((1, 2, 2, 3), np.float32)
    other = features.copy()
    other[0, 0, 0, :] = 1.0
    features[0, 1, 1, 0] = 6.0
    out = _np(scoring.feature_map(_t(features), _t(other), size=4, sigma=0))
    assert out.shape == (1, 4, 4)
    # Bilinear x2 (half-pixel centres): the corners keep the cells' values.
    assert out[0, 0, 0] == pytest.approx(1.0) and out[0, 3, 3] == pytest.approx(2.0)
    assert out[0, 0, 3] == pytest.approx(0.0) and 0.0 < out[0, 1, 1] < 1.0
    assert _np(scoring.feature_map(_t(features), _t(features), size=4, sigma=1.0)).max() == 0.0


def test_ssim_map_of_identical_images_is_zero():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    amap = _np(scoring.ssim_map(_t(images), _t(images)))
    assert amap.shape == (2, 16, 16)
    np.testing.assert_allclose(amap, 0.0, atol=1e-5)


def test_ssim_map_is_in_zero_one_and_high_for_an_inverted_texture():
    rng = np.random.default_rng(1)
    texture = rng.uniform(-0.3, 0.3, (1, 16, 16, 1)).astype("float32")
    images = 0.2 + texture
    # the texture inverted around the same brightness: the luminance term is ~1 and
    # the structure term ~-1, so SSIM ~ -1 and (1 - SSIM) / 2 ~ 1
    inverted = _np(scoring.ssim_map(_t(images), _t(0.2 - texture)))
    assert inverted.min() >= 0.0 and inverted.max() <= 1.0 + 1e-6
    assert inverted.mean() > 0.9
    # a small brightness shift keeps the structure: far lower than the inversion
    shifted = _np(scoring.ssim_map(_t(images), _t(images + 0.05)))
    assert 0.0 <= shifted.min() and shifted.mean() < 0.05
