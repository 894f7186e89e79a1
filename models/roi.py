"""Region-of-interest helpers: a Hough-style circle finder and annulus / box masks.

Everything is pure TensorFlow (usable in tf.data and inside the exported SavedModel, dynamic
batch dimension, static H and W) and deterministic.

Coordinates are pixel indices: row ``i`` / column ``j`` is the centre of pixel ``(i, j)``, so a
centre found by :func:`find_circle` can be fed straight to :func:`annulus_mask`.

How :func:`find_circle` works:

1. Edge map: Sobel gradient magnitude, with everything below ``mean + std`` of the image's
   magnitude dropped so that flat noisy background does not pile up votes.
2. Voting: for each of ``num_radii`` candidate radii the edge map is correlated with a ring
   kernel (weight ``max(0, 1 - |d - r| / w)``, w = max(1 px, radius step)). The score at
   ``(y, x, r)`` is thus the total edge strength lying on that circle: the classic Hough
   accumulator, unnormalized, so of two concentric circles (the inner and outer edge of a ring)
   the longer, outer one wins. The correlation is done in the frequency domain (``rfft2d``,
   zero padded so nothing wraps around): a 128x128 image with radii up to 58 px would need a
   ~120x120 spatial kernel per radius, far too slow as a plain conv2d on CPU.
3. Pick the arg-max over (radius, row, col) per image, then refine each of the three coordinates
   to sub-pixel / sub-step precision by fitting a parabola through the peak and its neighbours.
"""

import math

import tensorflow as tf


def _edge_strength(gray: tf.Tensor) -> tf.Tensor:
    """Sobel magnitude of [B, H, W] images with weak (background) responses removed."""
    grads = tf.image.sobel_edges(gray[..., None])[:, :, :, 0, :]
    magnitude = tf.norm(grads, axis=-1)
    mean, var = tf.nn.moments(magnitude, axes=[1, 2], keepdims=True)
    return tf.nn.relu(magnitude - mean - tf.sqrt(var))


def _ring_spectra(radii: tf.Tensor, width: float, fft_hw: tuple[int, int]) -> tf.Tensor:
    """Spectra of ring kernels centred on the origin (wrapped): complex [R, Fh, Fw // 2 + 1].

    Each ring is a triangle profile ``max(0, 1 - |d - r| / width)`` across the circle.
    """

    def offsets(n):
        idx = tf.range(n, dtype=tf.float32)
        return tf.where(idx < n / 2, idx, idx - n)

    dy, dx = offsets(fft_hw[0]), offsets(fft_hw[1])
    dist = tf.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    rings = tf.nn.relu(1.0 - tf.abs(dist[None] - radii[:, None, None]) / width)
    return tf.signal.rfft2d(rings)


def _fft_size(n: int) -> int:
    """Round up to a multiple of 16, which FFTs handle efficiently."""
    return -(-n // 16) * 16


def _parabolic_offset(below: tf.Tensor, peak: tf.Tensor, above: tf.Tensor) -> tf.Tensor:
    """Sub-sample position of a maximum from three samples, in [-0.5, 0.5]."""
    curvature = below - 2.0 * peak + above
    offset = 0.5 * (below - above) / tf.where(curvature < 0.0, curvature, -1.0)
    return tf.where(curvature < 0.0, tf.clip_by_value(offset, -0.5, 0.5), 0.0)


def _refine(votes: tf.Tensor, peak: tf.Tensor) -> list[tf.Tensor]:
    """Parabolic refinement of integer peaks [B, 3] in votes [B, R, H, W]: three [B] offsets."""
    sizes = tf.shape(votes)[1:]

    def at(index):
        index = tf.clip_by_value(index, 0, sizes - 1)
        return tf.gather_nd(votes, index[:, None, :], batch_dims=1)[:, 0]

    offsets = []
    for axis in range(3):
        step = tf.one_hot(axis, 3, dtype=tf.int32)
        offset = _parabolic_offset(at(peak - step), at(peak), at(peak + step))
        # A peak on the border of the search space has no neighbour on one side: keep it.
        inside = (peak[:, axis] > 0) & (peak[:, axis] < sizes[axis] - 1)
        offsets.append(tf.where(inside, offset, 0.0))
    return offsets


def find_circle(
    gray: tf.Tensor, r_min: float, r_max: float, num_radii: int = 16
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Find the strongest circle in each image with a Hough-style ring correlation.

    Args:
        gray: float32 [B, H, W] in [0, 1]; B may be dynamic, H and W must be static.
        r_min: smallest radius searched, as a fraction of min(H, W).
        r_max: largest radius searched, as a fraction of min(H, W).
        num_radii: number of radii tried, evenly spaced from r_min to r_max inclusive.

    Returns:
        (cy, cx, r): float32 [B] each, the centre row, centre column and radius in pixels,
        refined to sub-pixel precision. The centre may lie anywhere inside the image.

    Raises:
        ValueError: if H or W is not static or the radius range is empty.

    """
    gray = tf.convert_to_tensor(gray, tf.float32)
    height, width = gray.shape[1], gray.shape[2]
    if height is None or width is None:
        raise ValueError(f"find_circle needs static H and W, got shape {gray.shape}")
    side = min(height, width)
    if not 0.0 < r_min <= r_max or num_radii < 1:
        raise ValueError(f"bad radius range {r_min}..{r_max} x {num_radii}")
    r_lo, r_hi = r_min * side, r_max * side
    step = (r_hi - r_lo) / max(num_radii - 1, 1)
    radii = tf.constant([r_lo + k * step for k in range(num_radii)], tf.float32)

    # Rings as wide as the radius step, so that a circle between two candidate radii still
    # lands on both rings and the vote is smooth in r (a thin ring would drift the centre).
    ring_width = max(1.0, step)
    # Zero padding by the kernel reach keeps the circular FFT correlation from wrapping.
    reach = math.ceil(r_hi + ring_width)
    fft_hw = (_fft_size(height + reach), _fft_size(width + reach))
    rings = _ring_spectra(radii, ring_width, fft_hw)
    spectrum = tf.signal.rfft2d(_edge_strength(gray), fft_length=fft_hw)
    votes = tf.signal.irfft2d(spectrum[:, None] * rings[None], fft_hw)
    votes = votes[:, :, :height, :width]

    flat = tf.argmax(tf.reshape(votes, [-1, num_radii * height * width]), axis=-1)
    flat = tf.cast(flat, tf.int32)
    peak = tf.stack([flat // (height * width), flat // width % height, flat % width], axis=-1)
    d_r, d_y, d_x = _refine(votes, peak)
    peak = tf.cast(peak, tf.float32)
    return peak[:, 1] + d_y, peak[:, 2] + d_x, r_lo + (peak[:, 0] + d_r) * step


def _pixel_grid(shape_hw) -> tuple[tf.Tensor, tf.Tensor]:
    """Row and column indices as float32 [H, 1] and [1, W]."""
    height, width = shape_hw
    rows = tf.range(height, dtype=tf.float32)[:, None]
    cols = tf.range(width, dtype=tf.float32)[None, :]
    return rows, cols


def annulus_mask(shape_hw, cy, cx, r, inner: float, outer: float) -> tf.Tensor:
    """Mask of the ring ``inner * r <= distance <= outer * r`` around each image's centre.

    Args:
        shape_hw: (H, W) of the images, static ints.
        cy: float [B] (or scalar) centre rows in pixels, as returned by find_circle.
        cx: float [B] (or scalar) centre columns in pixels.
        r: float [B] (or scalar) radii in pixels.
        inner: inner radius as a fraction of r (0 for a full disc).
        outer: outer radius as a fraction of r.

    Returns:
        float32 [B, H, W, 1], 1 inside the ring and 0 outside (pixel centres tested).

    """
    rows, cols = _pixel_grid(shape_hw)

    def per_image(v):
        return tf.reshape(tf.cast(v, tf.float32), [-1, 1, 1])

    dist = tf.sqrt((rows - per_image(cy)) ** 2 + (cols - per_image(cx)) ** 2)
    radius = per_image(r)
    inside = (dist >= inner * radius) & (dist <= outer * radius)
    return tf.cast(inside, tf.float32)[..., None]


def box_mask(shape_hw, box) -> tf.Tensor:
    """Mask of an axis-aligned box given as fractions of the image size.

    Args:
        shape_hw: (H, W) of the images, static ints.
        box: (y0, x0, y1, x1) as fractions of H and W; pixel (i, j) is inside when its centre
            ``((i + 0.5) / H, (j + 0.5) / W)`` lies in [y0, y1] x [x0, x1].

    Returns:
        float32 [1, H, W, 1], broadcastable over a batch.

    """
    height, width = shape_hw
    y0, x0, y1, x1 = box
    rows, cols = _pixel_grid(shape_hw)
    rows, cols = (rows + 0.5) / height, (cols + 0.5) / width
    inside = (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)
    return tf.cast(inside, tf.float32)[None, ..., None]
