"""models.networks: shapes, value ranges, isize checks and the initialisation."""

import contextlib
import itertools
import signal

import numpy as np
import pytest

from models.networks import (
    bottleneck_size,
    build_decoder,
    build_discriminator,
    build_encoder,
    build_generator,
)

NZ, NGF, NDF, BATCH = 8, 8, 8, 2

SHAPE_CASES = [
    pytest.param(32, 1, 0, id="32-gray"),
    pytest.param(32, 3, 0, id="32-rgb"),
    pytest.param(32, 3, 1, id="32-rgb-extra"),
    pytest.param(64, 1, 0, id="64-gray"),
    pytest.param(64, 3, 1, id="64-rgb-extra"),
    pytest.param(48, 1, 0, id="48-gray"),
    pytest.param(96, 3, 0, id="96-rgb"),
]


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raises TimeoutError in the (main) thread if the block runs too long."""

    def _alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _images(isize: int, channels: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (BATCH, isize, isize, channels)).astype("f4")


@pytest.mark.parametrize("isize, channels, extra", SHAPE_CASES)
def test_encoder_and_decoder_shapes(isize, channels, extra):
    encoder = build_encoder(isize, channels, NZ, NDF, extra)
    latent = encoder(_images(isize, channels))
    assert tuple(latent.shape) == (BATCH, NZ)
    with _time_limit(5):
        decoder = build_decoder(isize, channels, NZ, NGF, extra)
    assert tuple(decoder(latent).shape) == (BATCH, isize, isize, channels)


def test_decoder_alone_builds_for_isize_48():
    # Used to loop forever (doubling 4 -> 8 -> ... past 48); the limit catches a regression.
    with _time_limit(1):
        decoder = build_decoder(48, 1, NZ, NGF)
    assert tuple(decoder.output_shape) == (None, 48, 48, 1)


@pytest.mark.parametrize("isize, channels, extra", SHAPE_CASES)
def test_generator_and_discriminator_shapes(isize, channels, extra):
    images = _images(isize, channels)
    with _time_limit(5):
        generator = build_generator(isize, channels, NZ, NGF, extra)
    reconstruction, latent_i, latent_o = generator(images)
    assert tuple(reconstruction.shape) == (BATCH, isize, isize, channels)
    assert tuple(latent_i.shape) == (BATCH, NZ)
    assert tuple(latent_o.shape) == (BATCH, NZ)

    discriminator = build_discriminator(isize, channels, NDF, extra)
    logit, features, early = discriminator(images)
    assert tuple(logit.shape) == (BATCH,)
    assert tuple(early.shape) == (BATCH, isize // 2, isize // 2, NDF)
    # Bottleneck maps (4x4 for powers of two, 6x6 for 48 and 96), ndf doubled at
    # each halving after the first: isize/2 -> s.
    side = bottleneck_size(isize)
    assert side == {32: 4, 64: 4, 48: 6, 96: 6}[isize]
    assert tuple(features.shape) == (BATCH, side, side, NDF * isize // (2 * side))


def test_decoder_output_is_in_minus_one_one():
    decoder = build_decoder(32, 3, NZ, NGF)
    latent = np.random.default_rng(1).normal(0, 1, (4, NZ)).astype("f4")
    out = np.asarray(decoder(latent, training=False))
    assert out.shape == (4, 32, 32, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0
    # Blow the weights up: the pre-activation explodes but the tanh keeps the range,
    # and both ends are reached (not a clip to a narrower band).
    for kernel in _kernels(decoder):
        kernel.assign(kernel * 1000.0)
    out = np.asarray(decoder(latent, training=False))
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.min() < -0.99 and out.max() > 0.99


@pytest.mark.parametrize("isize", [40, 16, 0, 31, 24])
@pytest.mark.parametrize(
    "build",
    [
        lambda isize: build_encoder(isize, 1, NZ, NDF),
        lambda isize: build_decoder(isize, 1, NZ, NGF),
        lambda isize: build_generator(isize, 1, NZ, NGF),
        lambda isize: build_discriminator(isize, 1, NDF),
    ],
    ids=["encoder", "decoder", "generator", "discriminator"],
)
def test_bad_isize_raises_quoting_the_value(build, isize):
    with _time_limit(5), pytest.raises(ValueError, match=rf"isize.*\b{isize}\b"):
        build(isize)


def _kernels(model) -> list:
    return [w for w in model.weights if w.path.endswith("kernel")]


def test_conv_kernels_start_at_std_0_02():
    generator = build_generator(64, 3, 16, 16)
    discriminator = build_discriminator(64, 3, 16)
    kernels = _kernels(generator) + _kernels(discriminator)
    assert len(kernels) >= 10
    pooled = np.concatenate([np.ravel(k.numpy()) for k in kernels])
    assert abs(pooled.mean()) < 1e-3
    assert pooled.std() == pytest.approx(0.02, rel=0.03)
    for kernel in kernels:
        values = np.ravel(kernel.numpy())
        if values.size >= 1000:  # enough values for a per-layer estimate
            assert values.std() == pytest.approx(0.02, rel=0.15), kernel.path


def test_same_shaped_layers_get_different_weights():
    # Regression: one initializer shared by all layers gave them identical weights.
    generator = build_generator(32, 1, NZ, NGF)
    encoders = [generator.get_layer(name) for name in ("encoder1", "encoder2")]
    pairs = list(zip(*(_kernels(e) for e in encoders)))
    assert len(pairs) >= 3
    for a, b in pairs:
        assert a.shape == b.shape
        assert not np.allclose(a.numpy(), b.numpy()), (a.path, b.path)
    # also two models built one after the other, and same-shaped layers inside one model
    other = build_encoder(32, 1, NZ, NGF)
    for a, b in zip(_kernels(encoders[0]), _kernels(other)):
        assert not np.allclose(a.numpy(), b.numpy())
    all_kernels = _kernels(generator) + _kernels(build_discriminator(32, 1, NDF))
    for a, b in itertools.combinations(all_kernels, 2):
        if a.shape == b.shape:
            assert not np.allclose(a.numpy(), b.numpy()), (a.path, b.path)


def test_batch_norm_gamma_starts_at_normal_1_0_02():
    generator = build_generator(64, 1, 16, 16)
    gammas = [w for w in generator.weights if w.path.endswith("gamma")]
    assert len(gammas) >= 6
    values = np.concatenate([np.ravel(g.numpy()) for g in gammas])
    assert values.mean() == pytest.approx(1.0, abs=0.005)
    assert values.std() == pytest.approx(0.02, rel=0.2)  # not the Keras default of all ones
    for weight in generator.weights:
        if weight.path.endswith(("beta", "moving_mean")):
            np.testing.assert_array_equal(weight.numpy(), 0.0)
        if weight.path.endswith("moving_variance"):
            np.testing.assert_array_equal(weight.numpy(), 1.0)
