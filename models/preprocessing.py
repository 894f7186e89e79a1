"""The one preprocessing function, run by the preprocess stage and by the SavedModel.

    from models.preprocessing import preprocess
    images, roi = preprocess(raw_images, spec)   # spec: the `preprocess` config as a dict

Both training data and served images go through ``preprocess`` (TFX's
``preprocessing_fn`` idea), so the two cannot drift apart. In order:
resize to ``isize`` (squash, letterbox or center_crop), CLAHE contrast
(optional), a region of interest (a fixed box, or an annulus around a circle
found in each image) and scaling to [-1, 1]. Everything is TensorFlow ops.
With ``tiles`` the image is squashed to its map size instead
(``models.tiling.map_size``): CLAHE and the ROI see the whole image, and the
scorer and the training data cut it into ``isize`` tiles.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import ndimage

from models.options import RESIZE_MODES
from models.tiling import map_size


def content_box(height, width, isize: int, mode: str) -> tuple[tuple, tuple]:
    """Where an image's content lies after ``mode``: (box in the model input, box in the image).

    Boxes are ``(top, left, bottom, right)``. ``letterbox`` fits the image inside
    ``isize`` keeping its aspect and pads evenly, with TensorFlow's
    ``resize_with_pad`` arithmetic (float32, floored); ``center_crop`` keeps
    the central square. Takes Python ints (localization maps back onto the
    original image with it) or scalar tensors (inside ``preprocess``).
    """
    if mode == "squash":
        return (0, 0, isize, isize), (0, 0, height, width)
    if mode == "center_crop":
        side = tf.minimum(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return (0, 0, isize, isize), (top, left, top + side, left + side)
    if mode == "letterbox":
        f_height, f_width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        ratio = tf.maximum(f_width / isize, f_height / isize)
        inner_h = tf.cast(tf.floor(f_height / ratio), tf.int32)
        inner_w = tf.cast(tf.floor(f_width / ratio), tf.int32)
        top = tf.maximum(0, tf.cast(tf.floor((isize - f_height / ratio) / 2), tf.int32))
        left = tf.maximum(0, tf.cast(tf.floor((isize - f_width / ratio) / 2), tf.int32))
        return (top, left, top + inner_h, left + inner_w), (0, 0, height, width)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")


def _resize(images: tf.Tensor, spec: dict) -> tf.Tensor:
    """To the map size: ``isize`` square, or with tiles the whole image at tile scale."""
    isize, mode = spec["isize"], spec["resize"]
    if mode == "squash":  # the only mode with tiles (the config refuses the others)
        return tf.image.resize(images, map_size(spec), antialias=True)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    (top, left, bottom, right), (y0, x0, y1, x1) = content_box(height, width, isize, mode)
    content = images[:, y0:y1, x0:x1, :]
    inner = tf.image.resize(content, (bottom - top, right - left), antialias=True)
    return tf.image.pad_to_bounding_box(inner, top, left, isize, isize)


def head_spec_of(spec: dict, head_size) -> dict:
    """The spec of a defect head's images of ``(H, W)`` (``model.head_size``), squashed.

    Everything else is the generator's preprocessing: CLAHE, the ROI, the scaling.
    """
    return {**spec, "isize": min(head_size), "size": [int(s) for s in head_size]}


def _roi_mask(images: tf.Tensor, spec: dict) -> tuple[tf.Tensor | None, tuple | None]:
    """``[B, H, W, 1]`` float mask of the region of interest (None for no ROI), and the circle.

    The circle, ``(cy, cx, radius)`` float32 ``[B]`` each in map pixels, is what
    ``roi: circle`` found (None otherwise): the input checks watch it.
    """
    from models import roi  # noqa: PLC0415 - only configs with a ROI need it

    size = map_size(spec)
    if spec["roi"] == "box":
        mask = roi.box_mask(size, tuple(spec["roi_box"]))
        return tf.broadcast_to(mask, tf.concat([tf.shape(images)[:1], [*size, 1]], 0)), None
    if spec["roi"] == "circle":
        gray = tf.reduce_mean(images, axis=-1)
        r_min, r_max = spec["roi_radius_range"]
        cy, cx, radius = roi.find_circle(gray, r_min, r_max)
        mask = roi.annulus_mask(size, cy, cx, radius, spec["roi_inner"], spec["roi_outer"])
        return mask, (cy, cx, radius)
    return None, None


def preprocess(images: tf.Tensor, spec: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw images to the model's input: ``preprocess_with_circle`` without the circle."""
    model_input, mask, _ = preprocess_with_circle(images, spec)
    return model_input, mask


def preprocess_with_circle(images: tf.Tensor, spec: dict) -> tuple[tf.Tensor, tf.Tensor, tuple]:
    """Raw images to the model's input, and the circle the ROI found.

    Args:
        images: float32 ``[B, H, W, C]`` in [0, 255], C as ``spec["channels"]``.
        spec: the ``preprocess`` config section as a dict (``isize``,
            ``channels``, ``resize``, ``clahe``, ``clahe_clip``,
            ``clahe_tiles``, ``roi`` and its options, ``tiles`` and the
            resolved ``tiles_image``).

    Returns:
        ``(images [B, H, W, C] in [-1, 1], roi [B, H, W, 1], circle)``, ``(H, W)``
        the map size (``isize`` square without tiles); the ROI mask is all ones
        when no region of interest is configured; ``circle`` is ``(cy, cx,
        radius)`` float32 ``[B]`` each in map pixels with ``roi: circle``, else None.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    images = _resize(images, spec)
    images = tf.clip_by_value(images / 255.0, 0.0, 1.0)
    if spec["clahe"]:
        from models.clahe import clahe  # noqa: PLC0415 - only configs with CLAHE need it

        images = clahe(images, spec["clahe_clip"], spec["clahe_tiles"])
    mask, circle = _roi_mask(images, spec)
    if mask is None:
        mask = tf.ones_like(images[..., :1])
    else:
        images = images * mask
    return images * 2.0 - 1.0, mask, circle


# A part of a resized mask counts from this coverage up (antialiasing leaves float dust).
MIN_PART_COVERAGE = 0.02


def resize_mask(mask, spec: dict, keep_thin: bool = False):
    """A ground-truth mask ``[H, W]`` through the same geometry as its image.

    A map pixel is a defect pixel where the defect covers at least half of it.
    With ``keep_thin`` (a labelled defect's training target) a defect narrower
    than that is not lost: each part of the mask that covers no pixel by half
    keeps its pixels of at least half its peak coverage, a line about one pixel
    wide. Otherwise a thin crack's target would say "normal" everywhere.

    Returns:
        A uint8 array of 0/1 (numpy) of the map size, so pixel metrics compare
        maps and masks on the same grid.
    """
    mask = tf.convert_to_tensor(mask, tf.float32)[None, :, :, None]
    coverage = _resize(mask, spec)[0, :, :, 0].numpy()
    marked = coverage > 0.5
    if keep_thin:
        marked |= thin_parts(coverage)
    return marked.astype("uint8")


def thin_parts(coverage: np.ndarray) -> np.ndarray:
    """The densest pixels of each part of a coverage map that covers no pixel by half."""
    parts, count = ndimage.label(coverage > MIN_PART_COVERAGE)
    if count == 0:
        return np.zeros(coverage.shape, bool)
    peaks = np.asarray(ndimage.maximum(coverage, parts, np.arange(1, count + 1)))
    peak_of_pixel = np.concatenate([[np.inf], peaks])[parts]  # background: never marked
    return (peak_of_pixel <= 0.5) & (coverage >= 0.5 * peak_of_pixel)
