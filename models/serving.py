"""The serving endpoints: request checks, decoding and preprocessing around a ``Scorer``.

    archive = serving_archive(scorer, spec, threshold)
    archive.write_out("artifacts/default/export/ganomaly/1")

Everything that turns a request into a decision runs inside the SavedModel (TF Serving
runs none of this project's Python):

- ``serving_default``: ``images`` float32 ``[N, H, W, C]``, pixel values 0-255, one size
  per request.
- ``serving_bytes``: ``encoded`` string ``[N]``, PNG/JPEG/BMP files of any mix of sizes,
  decoded by ``models.decoding.decode`` (the decoder of the training data).

Both return ``score`` float32 ``[N]``, ``is_anomaly`` bool ``[N]`` and ``anomaly_map``
float32 ``[N, isize, isize]`` (with ``preprocess.tiles``: ``[N, H, W]``, the stitched map
at the model card's ``map_size``; with a defect head at a larger ``head_isize``,
``[N, *model.head_size]``: the image is preprocessed at both sizes, by the same
function as the training data; zero outside the region of interest), and both take an
empty batch. Given the training normals' input statistics (``models.input_stats``), both
also return the input checks: ``input_ok`` bool ``[N]`` (every statistic of the frame
within the training range), ``input_statistic`` string ``[N]`` (the one furthest out),
``input_z`` float32 ``[N]`` (its z-score) and ``input_statistics`` float32 ``[N, S]``
(all of them, in the model card's ``input_statistics.names`` order). A bad request
fails with ``InvalidArgument`` and one sentence naming the problem and what is expected
(``models.decoding.error_sentence`` extracts it).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models import input_stats
from models.decoding import decode
from models.preprocessing import head_spec_of, preprocess
from models.tiling import map_size

SIGNATURES = ("serving_default", "serving_bytes")
# The model card beside the graph in ``assets/``: what ``ganomaly predict`` reads.
ASSET_FILE = "ganomaly.json"
PIXEL_RANGE = (0.0, 255.0)


def _expected(channels: int) -> str:
    return f"expected float32 images of shape (N, H, W, {channels}) with pixel values 0-255"


def _check(tensor: tf.Tensor, ok, sentence: str, *shown) -> tf.Tensor:
    """``tensor`` once ``ok`` holds; otherwise InvalidArgument with ``sentence``."""
    assertion = tf.debugging.Assert(ok, [sentence, *shown], summarize=8)
    with tf.control_dependencies([assertion]):
        return tf.identity(tensor)


def check_images(images: tf.Tensor, channels: int) -> tf.Tensor:
    """Refuses a wrong rank, channel count, empty side, NaN/inf or values out of range.

    Each check runs only after the one before passed, so the error names the
    first problem; an empty batch passes. Only the assertions can fail here
    (no op that would raise its own, less readable error on a bad shape).
    """
    expected = _expected(channels)
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # [1:4] exist for any rank
    rank_ok = tf.equal(tf.size(shape), 4)
    images = _check(images, rank_ok, f"wrong rank: {expected}; got shape", shape)
    images = _check(
        images, tf.equal(padded[3], channels), f"wrong channel count: {expected}; got shape", shape
    )
    images = _check(
        images,
        tf.reduce_all(padded[1:3] > 0),
        f"an image has no pixels: {expected}; got shape",
        shape,
    )
    images = _check(
        images,
        tf.reduce_all(tf.math.is_finite(images)),
        f"pixels are NaN or infinite (a broken frame?): {expected}",
    )
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    in_range = (low >= PIXEL_RANGE[0]) & (high <= PIXEL_RANGE[1])
    images = _check(
        images, in_range, f"pixel values outside 0-255: {expected}; got min, max", low, high
    )
    images.set_shape([None, None, None, channels])  # static only: checked above
    return images


def _decode_one(encoded: tf.Tensor, index: tf.Tensor, channels: int) -> tf.Tensor:
    """One request file -> float32 ``[1, H, W, channels]``, refusing an empty string."""
    encoded = _check(
        encoded, tf.strings.length(encoded) > 0, "encoded file is an empty string: at index", index
    )
    return tf.cast(decode(encoded, channels), tf.float32)[None]


def _prepare(images: tf.Tensor, spec: dict, measured: bool, head_spec: dict | None = None):
    """``(model input, roi, statistics [B, S])``; S is 0 when the model has no input checks.

    With ``head_spec`` (a defect head at a larger size) the model input is the pair
    ``(input at isize, input at the head's size)`` and the ROI is at the head's size.
    """
    if measured:
        model_input, roi, stats = input_stats.measure(images, spec)
    else:
        model_input, roi = preprocess(images, spec)
        stats = tf.zeros([tf.shape(images)[0], 0])
    if head_spec is not None:
        head_input, roi = preprocess(images, head_spec)
        model_input = (model_input, head_input)
    return model_input, roi, stats


def serving_functions(scorer, spec: dict, threshold: float, reference: dict | None = None) -> dict:
    """The two endpoint functions (plain Python, traced by the archive).

    ``reference``: ``models.input_stats.summarise`` of the training normals; None
    (a model without them) leaves the input checks out.
    """
    channels, (height, width) = spec["channels"], map_size(spec)
    head_spec = None
    if getattr(scorer, "head_sized", False):  # the defect head reads its own size
        head_spec = head_spec_of(spec, scorer.head_size)
        height, width = scorer.map_size
    threshold = tf.constant(threshold, tf.float32)
    if reference and reference["names"] != input_stats.statistic_names(spec):
        raise ValueError(
            f"input statistics {reference['names']} are not the ones this preprocessing "
            f"measures, {input_stats.statistic_names(spec)}"
        )
    n_stats = len(reference["names"]) if reference else 0

    def decide(images: tf.Tensor, roi: tf.Tensor, stats: tf.Tensor) -> dict:
        scored = scorer.score(images)
        out = {
            "score": scored["score"],
            "is_anomaly": scored["score"] >= threshold,
            "anomaly_map": scored["anomaly_map"] * roi[..., 0],
        }
        if reference:
            out.update(input_stats.check(stats, reference), input_statistics=stats)
        return out

    def nothing() -> dict:
        out = {
            "score": tf.zeros([0], tf.float32),
            "is_anomaly": tf.zeros([0], tf.bool),
            "anomaly_map": tf.zeros([0, height, width], tf.float32),
        }
        if reference:
            out.update(
                input_ok=tf.zeros([0], tf.bool),
                input_statistic=tf.zeros([0], tf.string),
                input_z=tf.zeros([0], tf.float32),
                input_statistics=tf.zeros([0, n_stats], tf.float32),
            )
        return out

    def from_images(images):
        images = check_images(images, channels)
        # An empty batch is answered without running the networks (some ops need N > 0).
        return tf.cond(
            tf.shape(images)[0] > 0,
            lambda: decide(*_prepare(images, spec, n_stats > 0, head_spec)),
            nothing,
        )

    def from_bytes(encoded):
        # One file at a time: the files of a request may differ in size.
        def one(item):
            images = _decode_one(*item, channels)
            model_input, roi, stats = _prepare(images, spec, n_stats > 0, head_spec)
            return tf.nest.map_structure(lambda t: t[0], model_input), roi[0], stats[0]

        input_size = map_size(spec)
        input_signature = tf.TensorSpec([*input_size, channels], tf.float32)
        if head_spec is not None:
            head_signature = tf.TensorSpec([height, width, channels], tf.float32)
            input_signature = (input_signature, head_signature)
        indices = tf.range(tf.shape(encoded)[0])
        model_inputs, roi, stats = tf.map_fn(
            one,
            (encoded, indices),
            fn_output_signature=(
                input_signature,
                tf.TensorSpec([height, width, 1], tf.float32),
                tf.TensorSpec([n_stats], tf.float32),
            ),
        )
        return tf.cond(tf.size(indices) > 0, lambda: decide(model_inputs, roi, stats), nothing)

    return {"serving_default": from_images, "serving_bytes": from_bytes}


def serving_archive(scorer, spec: dict, threshold: float, reference: dict | None = None):
    """The scorer, its preprocessing, threshold and input checks as a SavedModel archive.

    ``reference``: the training normals' input statistics (``serving_functions``).

    Returns:
        ``(keras.export.ExportArchive, {signature name: its traced function})``.
    """
    functions = serving_functions(scorer, spec, threshold, reference)
    archive = keras.export.ExportArchive()
    archive.track(scorer)
    # Any rank is accepted so that a wrong one gets a readable refusal.
    endpoints = {}
    endpoints["serving_default"] = archive.add_endpoint(
        "serving_default",
        functions["serving_default"],
        input_signature=[tf.TensorSpec(None, tf.float32, name="images")],
    )
    endpoints["serving_bytes"] = archive.add_endpoint(
        "serving_bytes",
        functions["serving_bytes"],
        input_signature=[tf.TensorSpec([None], tf.string, name="encoded")],
    )
    return archive, endpoints
