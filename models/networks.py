"""GANomaly's networks as pure Keras builders (DCGAN-style, any isize).

    from models.networks import build_generator, build_discriminator
    generator = build_generator(isize=64, channels=1, nz=100, ngf=64)

The layout follows the original PyTorch code (samet-akcay/ganomaly): the
encoder halves the image with 4x4 stride-2 convolutions down to 4x4 (or, for
sizes that are not a power of two, the smallest even halving of at least 4),
then a valid convolution of that size gives the 1x1 latent; the decoder
mirrors it with transposed convolutions. Weights start at N(0, 0.02), batch-norm scales at
N(1, 0.02), as the paper's ``weights_init`` does.
"""

from __future__ import annotations

import keras
from keras import layers

# PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), so the
# running statistics used at inference move as in the original.
BN_MOMENTUM = 0.9
_BN_KWARGS = {"momentum": BN_MOMENTUM, "epsilon": 1e-5}


def float32_outputs(tensors) -> list:
    """A network's outputs in float32, whatever its compute dtype (``mixed_float16``)."""
    return [keras.ops.cast(t, "float32") for t in tensors]


def _check_isize(isize: int) -> None:
    if isize < 32 or isize % 16:
        raise ValueError(f"isize must be a multiple of 16 of at least 32, got {isize!r}")


def bottleneck_size(isize: int) -> int:
    """Side of the smallest feature map: ``isize`` halved while it stays even and >= 4.

    64 -> 4, 48 -> 6, 80 -> 5, 144 -> 9: the last convolution uses it as its
    kernel, so any multiple of 16 reaches a 1x1 latent (the original code
    handled powers of two only).
    """
    size = isize
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
    return size


def _conv_init() -> keras.initializers.Initializer:
    # A fresh initializer per layer: a shared one would give same-shaped
    # layers identical weights.
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _batch_norm(momentum: float = BN_MOMENTUM) -> layers.BatchNormalization:
    return layers.BatchNormalization(
        gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
        **{**_BN_KWARGS, "momentum": momentum},
    )


def _conv(filters: int, kernel: int, strides: int, padding: str) -> layers.Conv2D:
    return layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_init(),
    )


def _deconv(filters: int, kernel: int, strides: int, padding: str) -> layers.Conv2DTranspose:
    return layers.Conv2DTranspose(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_init(),
    )


def _encoder_trunk(x, isize: int, ndf: int, extra_layers: int, momentum: float = BN_MOMENTUM):
    """Downsamples ``x`` to the bottleneck size; returns it and the first block's map."""
    x = _conv(ndf, 4, 2, "same")(x)
    x = first = layers.LeakyReLU(0.2)(x)
    size, channels = isize // 2, ndf
    for _ in range(extra_layers):
        x = _conv(channels, 3, 1, "same")(x)
        x = _batch_norm(momentum)(x)
        x = layers.LeakyReLU(0.2)(x)
    while size > bottleneck_size(isize):
        channels *= 2
        size //= 2
        x = _conv(channels, 4, 2, "same")(x)
        x = _batch_norm(momentum)(x)
        x = layers.LeakyReLU(0.2)(x)
    return x, first


def build_encoder(
    isize: int, channels: int, nz: int, ndf: int, extra_layers: int = 0, name: str = "encoder"
) -> keras.Model:
    """Image ``[B, isize, isize, C]`` -> latent ``[B, nz]``."""
    _check_isize(isize)
    image = keras.Input((isize, isize, channels))
    x, _ = _encoder_trunk(image, isize, ndf, extra_layers)
    x = _conv(nz, bottleneck_size(isize), 1, "valid")(x)
    latent = layers.Flatten()(x)
    return keras.Model(image, latent, name=name)


def build_decoder(
    isize: int, channels: int, nz: int, ngf: int, extra_layers: int = 0, name: str = "decoder"
) -> keras.Model:
    """Latent ``[B, nz]`` -> image ``[B, isize, isize, C]`` in [-1, 1]."""
    _check_isize(isize)
    bottleneck = bottleneck_size(isize)
    filters, size = ngf // 2, bottleneck
    while size != isize:
        filters *= 2
        size *= 2
    latent = keras.Input((nz,))
    x = layers.Reshape((1, 1, nz))(latent)
    x = _deconv(filters, bottleneck, 1, "valid")(x)  # 1x1 -> bottleneck x bottleneck
    x = _batch_norm()(x)
    x = layers.ReLU()(x)
    size = bottleneck
    while size < isize // 2:
        filters //= 2
        size *= 2
        x = _deconv(filters, 4, 2, "same")(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
    for _ in range(extra_layers):
        x = _conv(filters, 3, 1, "same")(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
    x = _deconv(channels, 4, 2, "same")(x)
    image = layers.Activation("tanh")(x)
    return keras.Model(latent, image, name=name)


def build_skip_autoencoder(isize: int, channels: int, nz: int, ngf: int) -> keras.Model:
    """Encoder1 + decoder with U-Net skip connections (Skip-GANomaly, Akcay et al. 2019).

    Image -> (reconstruction, latent_i). Every decoder level also sees the
    encoder's features of the same size, so reconstructions keep fine texture
    that the 1x1 bottleneck alone loses.
    """
    _check_isize(isize)
    image = keras.Input((isize, isize, channels))
    x = layers.LeakyReLU(0.2)(_conv(ngf, 4, 2, "same")(image))
    skips, size, filters = [x], isize // 2, ngf
    while size > bottleneck_size(isize):
        filters, size = filters * 2, size // 2
        x = layers.LeakyReLU(0.2)(_batch_norm()(_conv(filters, 4, 2, "same")(x)))
        skips.append(x)
    latent = layers.Flatten()(_conv(nz, size, 1, "valid")(x))
    y = layers.Reshape((1, 1, nz))(latent)
    y = layers.ReLU()(_batch_norm()(_deconv(filters, size, 1, "valid")(y)))
    y = layers.Concatenate()([y, skips.pop()])
    while skips:
        filters //= 2
        y = layers.ReLU()(_batch_norm()(_deconv(filters, 4, 2, "same")(y)))
        y = layers.Concatenate()([y, skips.pop()])
    reconstruction = layers.Activation("tanh")(_deconv(channels, 4, 2, "same")(y))
    return keras.Model(image, [reconstruction, latent], name="encoder1_decoder")


def build_generator(
    isize: int,
    channels: int,
    nz: int = 100,
    ngf: int = 64,
    extra_layers: int = 0,
    skip_connections: bool = False,
) -> keras.Model:
    """Encoder -> decoder -> encoder: image -> (reconstruction, latent_i, latent_o)."""
    image = keras.Input((isize, isize, channels))
    if skip_connections:
        reconstruction, latent_i = build_skip_autoencoder(isize, channels, nz, ngf)(image)
    else:
        encoder1 = build_encoder(isize, channels, nz, ngf, extra_layers, name="encoder1")
        decoder = build_decoder(isize, channels, nz, ngf, extra_layers, name="decoder")
        latent_i = encoder1(image)
        reconstruction = decoder(latent_i)
    encoder2 = build_encoder(isize, channels, nz, ngf, extra_layers, name="encoder2")
    latent_o = encoder2(reconstruction)
    return keras.Model(image, [reconstruction, latent_i, latent_o], name="generator")


def build_discriminator(
    isize: int,
    channels: int,
    ndf: int = 64,
    extra_layers: int = 0,
    batch_norm_momentum: float = BN_MOMENTUM,
) -> keras.Model:
    """Image -> (logit ``[B]``, features ``[B, s, s, F]``, early features ``[B, S/2, S/2, ndf]``).

    The features (the last map before the classifier, s the bottleneck) feed the
    adversarial feature-matching loss; the logit feeds the discriminator's BCE;
    the early features (after the first convolution, half the image side) feed
    the ``discriminator`` anomaly map. ``batch_norm_momentum`` is that of the
    running statistics' moving average.
    """
    _check_isize(isize)
    image = keras.Input((isize, isize, channels))
    features, early = _encoder_trunk(image, isize, ndf, extra_layers, batch_norm_momentum)
    logit = layers.Flatten()(_conv(1, bottleneck_size(isize), 1, "valid")(features))
    logit = layers.Reshape(())(logit)
    return keras.Model(image, [logit, features, early], name="discriminator")


def _head_block(x, filters: int):
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization(**_BN_KWARGS)(x))
    return x


def build_defect_head(
    size: int | tuple[int, int],
    channels: int,
    filters: int = 16,
    levels: int = 3,
    reconstruction_size: int | None = None,
) -> keras.Model:
    """(image, reconstruction) -> per-pixel defect logit ``[B, H, W]``: a small U-Net.

    It reads the image, its reconstruction and their difference (as DRAEM's
    discriminative network reads image and reconstruction), so it can learn which
    differences are defects and which are the generator's usual blur.

    Args:
        size: the head's image side, or ``(H, W)`` (``model.head_size``); the
            generator's ``isize`` when the head reads the generator's images.
        channels: image channels.
        filters: the first level's width, doubled at each level.
        levels: poolings of the U-Net.
        reconstruction_size: the side of the reconstruction it is given when the
            generator runs at another size than the head: the head resizes it
            (bilinear) to ``size``. None: the same size as the image.
    """
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    for side in (height, width):
        _check_isize(side)
    image = keras.Input((height, width, channels))
    given = reconstruction_size
    reconstruction = keras.Input((given or height, given or width, channels))
    resized = reconstruction
    if given and (given, given) != (height, width):
        resized = layers.Resizing(height, width, interpolation="bilinear")(reconstruction)
    difference = layers.Subtract()([image, resized])
    x = layers.Concatenate()([image, resized, difference])
    skips = []
    for level in range(levels):
        x = _head_block(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = _head_block(x, filters * 2**levels)
    for level in reversed(range(levels)):
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = _head_block(layers.Concatenate()([x, skips[level]]), filters * 2**level)
    logit = layers.Conv2D(1, 1, dtype="float32")(x)
    logit = layers.Reshape((height, width))(logit)
    return keras.Model([image, reconstruction], logit, name="defect_head")
