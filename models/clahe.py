"""CLAHE (contrast limited adaptive histogram equalization) in pure TensorFlow.

This reimplements OpenCV's ``cv2.createCLAHE(clipLimit, tileGridSize=(g, g)).apply`` for 8-bit
images so that the same preprocessing runs in the tf.data training pipeline and inside the
exported SavedModel. Only TensorFlow ops are used (no numpy, no ``py_function``), the batch
dimension may be dynamic, and everything is integer or fixed-order float arithmetic, hence
deterministic.

The steps follow OpenCV's ``CLAHE_Impl::apply`` (``imgproc/src/clahe.cpp``) step by step:

1. The float image in [0, 1] is quantized to grey levels ``round(255 * x)``.
2. If H or W is not divisible by the grid, the image is padded at the bottom and right with
   reflect-101 by ``g - H % g`` rows and ``g - W % g`` columns. Like OpenCV, once either side
   needs padding both are padded, even a side that was already divisible.
3. Per tile: a 256-bin histogram, clipped at ``max(1, int(clip_limit * tile_pixels / 256))``;
   the clipped excess is spread evenly over all bins and the remainder goes one count each to
   bins ``0, step, 2 * step, ...`` with ``step = max(256 // residual, 1)``.
4. The tile LUT is ``round(cumsum(hist) * 255 / tile_pixels)``.
5. Every pixel of the unpadded image is bilinearly interpolated between the LUTs of the four
   nearest tile centres (``t = i / tile_size - 0.5``, clamped to the border tiles), and the
   result is rounded back to a grey level and returned divided by 255.

Colour images (C = 3) are equalized per channel, independently. That differs from the usual
"CLAHE on the L channel of Lab" recipe, but it needs no colour conversion and keeps the op a
simple map over channels; for the grey inspection images this pipeline targets C is 1 anyway.
"""

import tensorflow as tf

_BINS = 256


def _pad_to_grid(q: tf.Tensor, tile_grid: int) -> tf.Tensor:
    """Pad [N, H, W] bottom/right with reflect-101 exactly as OpenCV does for odd sizes."""
    height, width = q.shape[1], q.shape[2]
    if height % tile_grid == 0 and width % tile_grid == 0:
        return q
    # OpenCV pads both axes once either one needs it (g rows/cols on an already divisible side).
    pad_h = tile_grid - height % tile_grid
    pad_w = tile_grid - width % tile_grid
    # tf.pad's REFLECT excludes the edge pixel, i.e. it is OpenCV's BORDER_REFLECT_101.
    return tf.pad(q, [[0, 0], [0, pad_h], [0, pad_w]], mode="REFLECT")


def _tile_histograms(q: tf.Tensor, tile_grid: int) -> tf.Tensor:
    """Count grey levels per tile: [N, Hp, Wp] int32 -> [N, g, g, 256] int32."""
    tile_h, tile_w = q.shape[1] // tile_grid, q.shape[2] // tile_grid
    tiles = tf.reshape(q, [-1, tile_grid, tile_h, tile_grid, tile_w])
    tiles = tf.transpose(tiles, [0, 1, 3, 2, 4])
    flat = tf.reshape(tiles, [-1, tile_h * tile_w])
    hist = tf.math.bincount(flat, minlength=_BINS, maxlength=_BINS, axis=-1, dtype=tf.int32)
    return tf.reshape(hist, [-1, tile_grid, tile_grid, _BINS])


def _clip_histograms(hist: tf.Tensor, clip: int) -> tf.Tensor:
    """Clip each histogram at ``clip`` and redistribute the excess like OpenCV."""
    clipped = tf.reduce_sum(tf.maximum(hist - clip, 0), axis=-1, keepdims=True)
    hist = tf.minimum(hist, clip)
    batch = clipped // _BINS
    residual = clipped - batch * _BINS
    # OpenCV hands the remainder out one count at a time to every step-th bin from bin 0.
    step = tf.maximum(_BINS // tf.maximum(residual, 1), 1)
    bins = tf.range(_BINS, dtype=tf.int32)
    extra = tf.logical_and(bins % step == 0, bins // step < residual)
    return hist + batch + tf.cast(extra, tf.int32)


def _axis_weights(size: int, tile_size: int, tile_grid: int):
    """Neighbouring tile indices and the weight of the second one, per pixel along one axis."""
    # Float32 throughout, in OpenCV's order: t = i * (1 / tile_size) - 0.5.
    inv = tf.constant(1.0 / tile_size, tf.float32)
    pos = tf.range(size, dtype=tf.float32) * inv - 0.5
    first = tf.floor(pos)
    weight = pos - first
    first = tf.cast(first, tf.int32)
    lo = tf.maximum(first, 0)
    hi = tf.minimum(first + 1, tile_grid - 1)
    return lo, hi, weight


def _interpolate(q: tf.Tensor, lut: tf.Tensor, tile_size: tuple[int, int], tile_grid: int):
    """Bilinear blend of the four nearest tile LUTs for every pixel: float32 [N, H, W]."""
    height, width = q.shape[1], q.shape[2]
    y_lo, y_hi, ya = _axis_weights(height, tile_size[0], tile_grid)
    x_lo, x_hi, xa = _axis_weights(width, tile_size[1], tile_grid)
    lut = tf.reshape(lut, [-1, tile_grid * tile_grid * _BINS])

    def lookup(ty, tx):
        tile = (ty[:, None] * tile_grid + tx[None, :]) * _BINS
        return tf.gather(lut, tile[None] + q, batch_dims=1)

    ya, xa = ya[:, None], xa[None, :]
    top = lookup(y_lo, x_lo) * (1.0 - xa) + lookup(y_lo, x_hi) * xa
    bottom = lookup(y_hi, x_lo) * (1.0 - xa) + lookup(y_hi, x_hi) * xa
    return top * (1.0 - ya) + bottom * ya


def clahe(images: tf.Tensor, clip_limit: float = 3.0, tile_grid: int = 8) -> tf.Tensor:
    """Contrast limited adaptive histogram equalization matching OpenCV on 8-bit images.

    Args:
        images: float32 [B, H, W, C] in [0, 1]; B may be dynamic, H, W, C must be static.
            Values are quantized to 256 grey levels first, as OpenCV works on uint8.
        clip_limit: OpenCV's ``clipLimit``, relative to the mean bin count of a tile;
            ``<= 0`` disables clipping (plain adaptive histogram equalization).
        tile_grid: number of tiles along each axis (OpenCV's ``tileGridSize=(g, g)``).

    Returns:
        float32 [B, H, W, C] in [0, 1], a multiple of 1/255; each channel equalized on its own.

    Raises:
        ValueError: if H, W or C is not static, or a side is too small for the padding.

    """
    images = tf.convert_to_tensor(images, tf.float32)
    _, height, width, channels = images.shape
    if None in (height, width, channels):
        raise ValueError(f"clahe needs static H, W, C, got shape {images.shape}")
    if min(height, width) <= tile_grid:
        raise ValueError(f"image {height}x{width} too small for a {tile_grid}x{tile_grid} grid")

    # Channels become extra images: [B, H, W, C] -> [B * C, H, W] grey levels.
    q = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.int32)
    q = tf.reshape(tf.transpose(q, [0, 3, 1, 2]), [-1, height, width])

    padded = _pad_to_grid(q, tile_grid)
    tile_size = (padded.shape[1] // tile_grid, padded.shape[2] // tile_grid)
    tile_pixels = tile_size[0] * tile_size[1]
    hist = _tile_histograms(padded, tile_grid)
    if clip_limit > 0:
        # Same double-precision arithmetic and truncation as OpenCV.
        hist = _clip_histograms(hist, max(int(clip_limit * tile_pixels / _BINS), 1))

    scale = tf.constant((_BINS - 1) / tile_pixels, tf.float32)
    lut = tf.round(tf.cast(tf.cumsum(hist, axis=-1), tf.float32) * scale)
    lut = tf.clip_by_value(lut, 0.0, 255.0)

    out = tf.clip_by_value(tf.round(_interpolate(q, lut, tile_size, tile_grid)), 0.0, 255.0)
    out = tf.transpose(tf.reshape(out, [-1, channels, height, width]), [0, 2, 3, 1])
    return out / 255.0
