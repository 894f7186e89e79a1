"""Synthetic anomalies pasted onto normal training images (pure TensorFlow functions).

    from models.anomalies import corrupt
    corrupted, masks = corrupt(images, probability=0.5, seed=(1, 2))

Two uses. Repair training: the generator maps a corrupted normal image back to
the clean one (the contextual loss is taken against the clean image), so at test
time a real defect is not reproduced and the residual lights up where it is.
The defect head (``model.defect_head``): it learns from ``masks`` what a defect
looks like next to its reconstruction, without a single labelled defect.

Each corrupted image gets one of ``KINDS``, the shapes real defects take:

- ``diffuse``: a large smooth region of thresholded Perlin-like noise with a
  brightness, contrast, blur or texture change (uneven lighting, stains);
- ``patch``: a blob filled with another normal image of the batch, shifted,
  rotated and rescaled (foreign material, a wrong texture);
- ``crack``: a thin polyline, darker or brighter (cracks, scratches);
- ``spots``: one to four small discs (holes, pits, dust);
- ``edge``: a disc cut out at the image border, filled with black (a chipped edge).

``masks`` are exact: a pixel whose mask is 0 is untouched, and the corrupted
image is ``images * (1 - mask) + fill * mask``.
"""

from __future__ import annotations

import math

import tensorflow as tf

KINDS = ("diffuse", "patch", "crack", "spots", "edge")
# Side of the coarse noise grid that is upsampled into blob shapes.
NOISE_GRID = (4, 8)
CRACK_SEGMENTS = 4
MAX_SPOTS = 4


def _stateless(shape, seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def _split(seed, n: int):
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n)


def _sides(size) -> tuple[int, int]:
    """``(H, W)`` of a side or a pair: the defect head may read long frames (``head_size``)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _scaled(points, height: int, width: int):
    """Points drawn on the short side's square, stretched to ``(H, W)`` (exact when square)."""
    short = min(height, width)
    return points * tf.constant([height / short, width / short], tf.float32)


def blob_masks(batch, size, seed, share=(0.005, 0.12)) -> tf.Tensor:
    """``[B, H, W, 1]`` soft masks of one to a few blobs covering ``share`` of the image.

    ``size`` is the side, or ``(H, W)``, as for every mask below.
    """
    height, width = _sides(size)
    seeds = _split(seed, 4)
    grid = NOISE_GRID[0] + tf.cast(_stateless([], seeds[0]) * 2, tf.int32) * 4
    noise = _stateless(tf.stack([batch, grid, grid, 1]), seeds[1])
    smooth = tf.image.resize(noise, (height, width), method="bicubic")
    # Keep a random share of the pixels: a high quantile of each map.
    shares = _stateless([batch, 1, 1, 1], seeds[2], *share)
    flat = tf.reshape(smooth, (batch, -1))
    ranked = tf.sort(flat, axis=-1, direction="DESCENDING")
    cut = tf.cast(shares[:, 0, 0, 0] * tf.cast(height * width, tf.float32), tf.int32)
    level = tf.gather(ranked, tf.maximum(cut, 1), axis=1, batch_dims=1)
    hard = tf.cast(smooth >= level[:, None, None, None], tf.float32)
    # Slightly soft edges, so the network cannot key on a hard outline.
    return tf.nn.avg_pool2d(hard, 3, 1, "SAME")


def _grid(height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Pixel-centre coordinates ``[1, H, W, 1]`` (y, x)."""
    rows = tf.range(height, dtype=tf.float32) + 0.5
    cols = tf.range(width, dtype=tf.float32) + 0.5
    y, x = tf.meshgrid(rows, cols, indexing="ij")
    return y[None, :, :, None], x[None, :, :, None]


def _segment_distance(y, x, start, end):
    """Distance of every pixel to the segments ``start -> end`` (``[B, 2]`` each)."""
    y0, x0 = start[:, 0, None, None, None], start[:, 1, None, None, None]
    dy = end[:, 0, None, None, None] - y0
    dx = end[:, 1, None, None, None] - x0
    t = ((y - y0) * dy + (x - x0) * dx) / tf.maximum(dy * dy + dx * dx, 1e-6)
    t = tf.clip_by_value(t, 0.0, 1.0)
    return tf.sqrt(tf.square(y - y0 - t * dy) + tf.square(x - x0 - t * dx))


def crack_masks(batch, size, seed) -> tf.Tensor:
    """Thin anti-aliased polylines: a random walk of ``CRACK_SEGMENTS`` segments."""
    (height, width), seeds = _sides(size), _split(seed, 5)
    size = min(height, width)  # lengths and widths follow the short side
    y, x = _grid(height, width)
    point = _scaled(_stateless([batch, 2], seeds[0], 0.15 * size, 0.85 * size), height, width)
    angle = _stateless([batch], seeds[1], 0.0, 2 * math.pi)
    turns = tf.random.stateless_normal([CRACK_SEGMENTS, batch], seeds[2], stddev=0.5)
    lengths = _stateless([CRACK_SEGMENTS, batch], seeds[3], size / 10, size / 4)
    thickness = _stateless([batch, 1, 1, 1], seeds[4], 0.4, 1.2)
    distance = tf.fill(tf.stack([batch, height, width, 1]), float(max(height, width)))
    for i in range(CRACK_SEGMENTS):
        angle = angle + turns[i]
        step = tf.stack([tf.sin(angle), tf.cos(angle)], axis=-1) * lengths[i][:, None]
        distance = tf.minimum(distance, _segment_distance(y, x, point, point + step))
        point = point + step
    return tf.clip_by_value(thickness + 0.5 - distance, 0.0, 1.0)


def _discs(y, x, centres, radii):
    """``max`` over discs ``centres [B, n, 2]``, ``radii [B, n]`` (0: none), anti-aliased."""
    dy = y[..., None] - centres[:, None, None, None, :, 0]
    dx = x[..., None] - centres[:, None, None, None, :, 1]
    inside = radii[:, None, None, None, :] + 0.5 - tf.sqrt(dy * dy + dx * dx)
    inside = tf.where(radii[:, None, None, None, :] > 0, inside, 0.0)
    return tf.clip_by_value(tf.reduce_max(inside, axis=-1), 0.0, 1.0)


def spot_masks(batch, size, seed) -> tf.Tensor:
    """One to ``MAX_SPOTS`` small discs, radius 0.7 px to 1/16 of the (short) side."""
    (height, width), seeds = _sides(size), _split(seed, 3)
    size = min(height, width)
    centres = _stateless([batch, MAX_SPOTS, 2], seeds[0], 0.1 * size, 0.9 * size)
    centres = _scaled(centres, height, width)
    radii = _stateless([batch, MAX_SPOTS], seeds[1], 0.7, max(1.0, size / 16))
    count = 1 + tf.cast(_stateless([batch, 1], seeds[2]) * MAX_SPOTS, tf.int32)
    radii = tf.where(tf.range(MAX_SPOTS)[None] < count, radii, 0.0)
    y, x = _grid(height, width)
    return _discs(y, x, centres, radii)


def edge_masks(batch, size, seed) -> tf.Tensor:
    """A disc centred on a random point of the image border, 1/10 to 1/4 of the (short) side."""
    (height, width), seeds = _sides(size), _split(seed, 3)
    along = _stateless([batch], seeds[0], 0.0, 1.0)
    side = tf.cast(_stateless([batch], seeds[1]) * 4, tf.int32)
    bottom, right = float(height), float(width)
    along_x, along_y = along * right, along * bottom  # the top and bottom, the two sides
    ys = tf.stack([tf.zeros_like(along), tf.fill(tf.shape(along), bottom), along_y, along_y], -1)
    xs = tf.stack([along_x, along_x, tf.zeros_like(along), tf.fill(tf.shape(along), right)], -1)
    centre = tf.stack(
        [tf.gather(ys, side, batch_dims=1), tf.gather(xs, side, batch_dims=1)], axis=-1
    )
    size = min(height, width)
    radius = _stateless([batch, 1], seeds[2], size / 10, size / 4)
    y, x = _grid(height, width)
    return _discs(y, x, centre[:, None], radius)


def _blurred(images: tf.Tensor) -> tf.Tensor:
    return tf.nn.avg_pool2d(tf.nn.avg_pool2d(images, 5, 1, "SAME"), 5, 1, "SAME")


def _diffuse_fills(images: tf.Tensor, seed) -> tf.Tensor:
    """A brightness shift, a contrast change, a blur or a new texture."""
    seeds = _split(seed, 5)
    batch, (height, width) = tf.shape(images)[0], images.shape[1:3]
    shift = _stateless([batch, 1, 1, 1], seeds[0], 0.1, 0.5)
    shift = shift * tf.where(_stateless([batch, 1, 1, 1], seeds[1]) < 0.5, -1.0, 1.0)
    mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
    contrast = mean + (images - mean) * _stateless([batch, 1, 1, 1], seeds[2], 0.0, 2.5)
    coarse = tf.stack([batch, height // 4, width // 4, images.shape[-1]])
    texture = tf.image.resize(
        _stateless(coarse, seeds[3], -0.5, 0.5), (height, width), method="bilinear"
    )
    choice = _stateless([batch, 1, 1, 1], seeds[4])
    fill = tf.where(choice < 0.25, images, contrast)
    fill = tf.where(choice >= 0.5, _blurred(images), fill)
    # Always some brightness change as well: a region that looks unchanged is no defect.
    return tf.where(choice >= 0.75, images + texture, fill) + shift


def _patch_fills(images: tf.Tensor, seed) -> tf.Tensor:
    """Another image of the batch: rotated by quarter turns, shifted, rescaled."""
    seeds = _split(seed, 3)
    batch = tf.shape(images)[0]
    other = tf.roll(images, shift=1, axis=0)
    turns = tf.cast(_stateless([batch, 1, 1, 1], seeds[0]) * 4, tf.int32)
    quarters = range(4)
    if images.shape[1] != images.shape[2]:  # a quarter turn would not fit: none or a half
        turns, quarters = turns // 2 * 2, (0, 2)
    other = sum(tf.where(turns == k, tf.image.rot90(other, k), 0.0) for k in quarters)
    # crop_and_resize: a box of 50-100% of the side at a random place (zoom 1-2x, shifted).
    side = _stateless([batch, 1], seeds[1], 0.5, 1.0)
    corner = _stateless([batch, 2], seeds[2]) * (1.0 - side)
    boxes = tf.concat([corner, corner + side], axis=-1)
    return tf.image.crop_and_resize(other, boxes, tf.range(batch), images.shape[1:3])


def _dark_or_bright(images: tf.Tensor, seed) -> tf.Tensor:
    seeds = _split(seed, 2)
    batch = tf.shape(images)[0]
    amount = _stateless([batch, 1, 1, 1], seeds[0], 0.3, 1.2)
    sign = tf.where(_stateless([batch, 1, 1, 1], seeds[1]) < 0.7, -1.0, 1.0)
    return images + sign * amount


def paste(images: tf.Tensor, masks: tf.Tensor, fills: tf.Tensor) -> tf.Tensor:
    """``images`` with ``fills`` (clipped to [-1, 1]) blended in where ``masks`` say."""
    return images * (1.0 - masks) + tf.clip_by_value(fills, -1.0, 1.0) * masks


def kind_masks_and_fills(images: tf.Tensor, seed) -> dict:
    """``{kind: (masks [B, H, W, 1], fills [B, H, W, C])}`` for every kind, for every image."""
    seeds = _split(seed, 9)
    batch, size = tf.shape(images)[0], tuple(images.shape[1:3])
    diffuse = tf.nn.avg_pool2d(blob_masks(batch, size, seeds[0], (0.05, 0.4)), 5, 1, "SAME")
    return {
        "diffuse": (diffuse, _diffuse_fills(images, seeds[1])),
        "patch": (blob_masks(batch, size, seeds[2], (0.01, 0.12)), _patch_fills(images, seeds[3])),
        "crack": (crack_masks(batch, size, seeds[4]), _dark_or_bright(images, seeds[5])),
        "spots": (spot_masks(batch, size, seeds[6]), _dark_or_bright(images, seeds[7])),
        "edge": (edge_masks(batch, size, seeds[8]), tf.fill(tf.shape(images), -1.0)),
    }


def corrupt(images: tf.Tensor, probability: float, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Pastes one synthetic anomaly of a random kind onto a share of the images.

    Args:
        images: ``[B, S, S, C]`` in [-1, 1].
        probability: share of the images that get an anomaly.
        seed: a stateless seed, shape ``[2]`` int.

    Returns:
        ``(corrupted images, masks [B, S, S, 1])``; masks are 0 where untouched.
    """
    seeds = _split(seed, 4)
    batch = tf.shape(images)[0]
    kinds = kind_masks_and_fills(images, seeds[0])
    pick = tf.cast(_stateless([batch, 1, 1, 1], seeds[1]) * len(KINDS), tf.int32)
    masks = sum(tf.where(pick == i, kinds[k][0], 0.0) for i, k in enumerate(KINDS))
    fills = sum(tf.where(pick == i, kinds[k][1], 0.0) for i, k in enumerate(KINDS))
    chosen = tf.cast(_stateless([batch, 1, 1, 1], seeds[2]) < probability, tf.float32)
    opacity = _stateless([batch, 1, 1, 1], seeds[3], 0.6, 1.0)
    masks = masks * chosen * opacity
    return paste(images, masks, fills), masks


def transplant(hosts, defects, masks, has_mask, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Labelled real defects cut out by their masks, moved, and pasted onto normals.

    On Magnetic Tile (10 labelled per type, the head alone on a fixed generator)
    the head taught on the defects in their own images fired on normal texture
    (image AUROC 0.894); on the same defects transplanted onto normals, 0.948.
    Ten images' backgrounds are memorised; a defect on ever-new normals is not.

    Args:
        hosts: ``[K, S, S, C]`` clean normal images.
        defects: ``[K, S, S, C]`` labelled defects.
        masks: ``[K, S, S, 1]`` their masks (binary; zeros for an image label).
        has_mask: ``[K]``, 1 where the defect has a mask; the others are returned as given.
        seed: a stateless seed, shape ``[2]`` int.

    Returns:
        ``(images, masks)``: each masked defect, rolled by its own random shift
        (wrapping round), on its host; the mask rolled with it.
    """
    size = tf.cast(tf.shape(defects)[1:3], tf.float32)
    shifts = tf.cast(_stateless([tf.shape(defects)[0], 2], seed) * size, tf.int32)

    def rolled(example):
        image, mask, shift = example
        return tf.roll(image, shift, [0, 1]), tf.roll(mask, shift, [0, 1])

    moved, moved_masks = tf.map_fn(
        rolled, (defects, masks, shifts), fn_output_signature=(defects.dtype, masks.dtype)
    )
    pasted = paste(hosts, tf.cast(moved_masks >= 0.5, defects.dtype), moved)
    keep = tf.reshape(tf.cast(has_mask, tf.bool), [-1, 1, 1, 1])
    return tf.where(keep, pasted, defects), tf.where(keep, moved_masks, masks)


def gallery(images: tf.Tensor, seed) -> tf.Tensor:
    """``uint8 [3 S, len(KINDS) S, C]``: per kind, an image, its anomaly and its mask.

    Rows: the clean image, the corrupted one, the mask; one column per kind in
    ``KINDS`` order (the ``i``-th image of ``images`` for the ``i``-th kind, the
    images repeated when there are fewer than kinds).
    """
    images = tf.gather(images, tf.range(len(KINDS)) % tf.shape(images)[0])
    kinds = kind_masks_and_fills(images, seed)
    channels = images.shape[-1]
    columns = []
    for i, kind in enumerate(KINDS):
        mask, fill = kinds[kind][0][i], kinds[kind][1][i]
        image = images[i]
        corrupted = paste(image, mask, fill)
        shown = tf.tile(mask * 2.0 - 1.0, [1, 1, channels])
        columns.append(tf.concat([image, corrupted, shown], axis=0))
    picture = tf.concat(columns, axis=1)
    return tf.cast(tf.round((tf.clip_by_value(picture, -1.0, 1.0) + 1.0) * 127.5), tf.uint8)
