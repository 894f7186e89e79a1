"""Input statistics: what a frame looks like, one TensorFlow function in training and serving.

    model_input, roi, stats = measure(raw_images, spec)   # stats float32 [B, S]
    names = statistic_names(spec)                          # the S names, in order
    reference = summarise(train_stats, names)              # at preprocess, training normals
    checked = check(stats, reference)                      # in the SavedModel: input_ok, ...

The preprocess stage measures every image with ``measure`` and the SavedModel
measures every request with it, so the statistics of the training normals and
of served frames cannot drift apart (TFX's principle for preprocessing, applied
to the data checks). What is measured, per image:

* on the decoded frame, before any resizing: ``brightness`` (mean grey level),
  ``contrast`` (its standard deviation), ``clipped`` (share of pixels at 0 or
  255: under- or over-exposure), ``sharpness`` (log10 of the mean square of
  the Laplacian: blur lowers it), ``noise`` (the variance between neighbouring
  pixels over the whole variance: 1 for white noise, small for a picture), ``size``
  (sqrt(H * W), pixels) and ``aspect`` (W / H), ``orientation`` ((horizontal -
  vertical gradient energy) / their sum: 0 without a preferred direction, a
  90-degree turn flips its sign), ``centre_y`` and ``centre_x`` (where the
  light is: the brightness-weighted centre as a fraction of H and W), and for
  colour models ``colour`` (mean of max - min over the channels, 0 for grey);
* after preprocessing, with ``roi: circle``: ``roi_radius``, ``roi_centre_y``
  and ``roi_centre_x``, the circle found, as fractions of the map's side.

``summarise`` keeps per statistic the training normals' median, a spread on
each side of it (from the 1% and 99% quantiles, never below ``MIN_SCALE``) and
101 quantiles: the reference the SavedModel checks each frame against
(``check``: a z-score per statistic, ``input_ok`` when every one is within
``Z_LIMIT``) and ``ganomaly predict`` compares each run's distribution with
(``pipeline/drift.py``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models.preprocessing import preprocess_with_circle
from models.tiling import map_size

FRAME = ("brightness", "contrast", "clipped", "sharpness", "noise", "size", "aspect")
FRAME += ("orientation", "centre_y", "centre_x")
COLOUR = ("colour",)
CIRCLE = ("roi_radius", "roi_centre_y", "roi_centre_x")
# A frame is out of the acquisition range when a statistic lies further than this many
# spreads (``summarise``) from the training normals' median. Generous on purpose:
# `input_ok` is for unusable frames (black, white, noise, another camera); gradual
# changes are the drift check's (per batch, far more sensitive).
Z_LIMIT = 8.0
# The least spread a statistic is given, in its own units: one that never varied in
# training (every frame 128 px wide) would otherwise call any change infinitely far.
MIN_SCALE = {
    "brightness": 1.0,  # grey levels
    "contrast": 0.5,  # grey levels
    "clipped": 0.005,  # share of the pixels
    "sharpness": 0.02,  # log10 units: about 5%
    "noise": 0.005,
    "size": 0.5,  # pixels; together with the relative floor below
    "aspect": 0.005,
    "orientation": 0.01,
    "centre_y": 0.002,
    "centre_x": 0.002,
    "colour": 0.5,  # grey levels
    "roi_radius": 0.002,
    "roi_centre_y": 0.002,
    "roi_centre_x": 0.002,
}
RELATIVE_MIN_SCALE = {"size": 0.005}  # of the median: a 4% larger frame is 8 spreads out
# The training normals' reference, written by the preprocess stage.
REFERENCE_FILE = "input_statistics.json"
# Statistics come from at most about this many pixels of a frame, in whole rows (every
# pixel of a frame up to 256 x 256): plenty for means, and a bounded cost for any frame.
SAMPLED_PIXELS = 256 * 256
QUANTILES = np.linspace(0.0, 1.0, 101)
_Z_99 = 2.3263  # the 99% quantile of a standard normal


def statistic_names(spec: dict) -> list[str]:
    """The statistics ``measure`` returns for a preprocessing spec, in order."""
    names = list(FRAME)
    if spec["channels"] == 3:
        names += COLOUR
    if spec["roi"] == "circle":
        names += CIRCLE
    return names


def frame_statistics(images: tf.Tensor, channels: int) -> list[tf.Tensor]:
    """The ``FRAME`` statistics (and ``colour`` for 3 channels) of float32 ``[B, H, W, C]`` 0-255.

    Returns one float32 ``[B]`` tensor per statistic. They are taken on at most
    about ``SAMPLED_PIXELS`` pixels (evenly spaced whole rows), each with its
    four neighbours at full resolution (the frame's edge repeated beyond it): a
    large frame costs what a 256-pixel one does, the Laplacian and gradients
    still see the camera's own pixels, and a frame of any size (one pixel
    included) gives finite values. Written for few ops and no branch:
    ``serving_bytes`` runs it once per file, and it must cost the model little
    (a 3x3 conv2d, pixels gathered one by one, or a tf.cond, measured slower).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    rows, picked = _sampled_rows(images)
    gray = picked[..., 0] if channels == 1 else tf.reduce_mean(picked, -1)
    up, centre, down = tf.split(gray, 3, axis=1)
    left = tf.concat([centre[:, :, :1], centre[:, :, :-1]], 2)
    right = tf.concat([centre[:, :, 1:], centre[:, :, -1:]], 2)
    laplacian = left + right + up + down - 4.0 * centre
    row_means, column_means = tf.reduce_mean(centre, 2), tf.reduce_mean(centre, 1)
    brightness = tf.reduce_mean(row_means, 1)
    variance = tf.maximum(_mean_square(centre) - tf.square(brightness), 0.0)
    grad_x, grad_y = _mean_square(right - left), _mean_square(down - up)
    lit = brightness > 0.0  # an all-black frame has its light in the middle
    safe = tf.where(lit, brightness, 1.0)
    light_y = tf.reduce_mean(row_means * (tf.cast(rows, tf.float32) + 0.5) / height, 1)
    light_x = tf.reduce_mean(column_means * (tf.range(width) + 0.5) / width, 1)
    ones = tf.ones_like(brightness)
    stats = [
        brightness,
        tf.sqrt(variance),
        tf.reduce_mean(tf.cast(tf.abs(centre - 127.5) > 127.0, tf.float32), [1, 2]),  # 0, 255
        # Not log(1 + v): a flat frame (0) must lie far below any real one (tens at least).
        tf.math.log(_mean_square(laplacian) + 0.01) / math.log(10.0),
        # White noise has as much variance between neighbours as overall (1); a picture less.
        (grad_x + grad_y) / (4.0 * variance + 1.0),
        tf.sqrt(height * width) * ones,
        width / height * ones,
        (grad_x - grad_y) / (grad_x + grad_y + 1.0),
        tf.where(lit, light_y / safe, 0.5),
        tf.where(lit, light_x / safe, 0.5),
    ]
    if channels == 3:
        middle = tf.split(picked, 3, axis=1)[1]
        spread = tf.reduce_max(middle, -1) - tf.reduce_min(middle, -1)
        stats.append(tf.reduce_mean(spread, [1, 2]))
    return stats


def _sampled_rows(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Every ``step``-th row of the frames, and the rows just above and below them.

    Whole rows are gathered (contiguous memory; a grid strided in both
    directions is copied pixel by pixel), as few as keep ``SAMPLED_PIXELS``.

    Returns:
        ``(rows, picked)``: the sampled rows' indices ``[h]``, and ``[B, 3h, W,
        C]``: the rows above them, the rows, the rows below (the edge row
        repeated at the frame's top and bottom).
    """
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    pixels = tf.cast(height * width, tf.float32)
    step = tf.maximum(1, tf.cast(tf.math.ceil(pixels / SAMPLED_PIXELS), tf.int32))
    rows = tf.range(0, height, step)
    around = [tf.maximum(rows - 1, 0), rows, tf.minimum(rows + 1, height - 1)]
    return rows, tf.gather(images, tf.concat(around, 0), axis=1)


def _mean_square(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(values), [1, 2])


def measure(images: tf.Tensor, spec: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Raw frames to the model's input, its ROI mask and the frames' statistics.

    Args:
        images: float32 ``[B, H, W, C]`` in [0, 255], the decoded frames.
        spec: the preprocessing spec (``models.preprocessing.preprocess``).

    Returns:
        ``(model input, roi, stats)``: the first two as ``preprocess`` returns
        them, ``stats`` float32 ``[B, S]`` in ``statistic_names(spec)`` order.
    """
    model_input, roi, circle = preprocess_with_circle(images, spec)
    stats = frame_statistics(images, spec["channels"])
    if spec["roi"] == "circle":
        height, width = map_size(spec)
        cy, cx, radius = circle
        stats += [radius / min(height, width), cy / height, cx / width]
    return model_input, roi, tf.stack(stats, axis=-1)


def summarise(values: np.ndarray, names: list[str]) -> dict:
    """The reference of the training normals' statistics ``[N, S]`` (``measure``'s order).

    Each side of the median gets its own spread, from the 1% and 99% quantiles
    (as a normal distribution's 2.326 standard deviations), so a statistic with
    a long tail on one side (a few over-exposed frames) is not held to the
    other side's spread.

    Returns:
        ``{"names", "count", "z_limit", "statistics": {name: {"median",
        "scale": [below, above], "quantiles"}}}``, JSON-ready: the model card's
        ``input_statistics``.
    """
    values = np.asarray(values, np.float64).reshape(-1, len(names))
    statistics = {}
    for index, name in enumerate(names):
        column = values[:, index]
        low, median, high = np.quantile(column, [0.01, 0.5, 0.99])
        floor = max(MIN_SCALE[name], RELATIVE_MIN_SCALE.get(name, 0.0) * abs(median))
        statistics[name] = {
            "median": float(median),
            "scale": [max((median - low) / _Z_99, floor), max((high - median) / _Z_99, floor)],
            "quantiles": [float(q) for q in np.quantile(column, QUANTILES)],
        }
    return {
        "names": list(names),
        "count": len(values),
        "z_limit": Z_LIMIT,
        "statistics": statistics,
    }


def check(stats: tf.Tensor, reference: dict) -> dict:
    """Each frame against the reference, in the graph.

    Args:
        stats: float32 ``[B, S]`` from ``measure``, in ``reference["names"]`` order.
        reference: ``summarise``'s output.

    Returns:
        ``input_ok`` bool ``[B]`` (every statistic within ``z_limit``),
        ``input_statistic`` string ``[B]`` (the one furthest out) and
        ``input_z`` float32 ``[B]`` (its signed z-score: the distance from the
        median in spreads of that side).
    """
    names = reference["names"]
    table = reference["statistics"]
    centre = tf.constant([table[n]["median"] for n in names], tf.float32)
    below, above = (tf.constant([table[n]["scale"][i] for n in names], tf.float32) for i in (0, 1))
    z = (stats - centre) / tf.where(stats < centre, below, above)
    worst = tf.argmax(tf.abs(z), axis=-1, output_type=tf.int32)
    worst_z = tf.gather(z, worst, batch_dims=1)
    return {
        "input_ok": tf.abs(worst_z) <= reference["z_limit"],
        "input_statistic": tf.gather(tf.constant(names), worst),
        "input_z": worst_z,
    }
