"""The TFRecord format between preprocess and the stages after it.

    writer.write(records.encode(image, roi, mask, label, defect_type, path))
    for example in records.read_split(preprocess_dir, "val"): ...

One record per image: the model input (float32 ``[isize, isize, C]`` in
[-1, 1]; with tiles the whole image at its map size), its ROI and
ground-truth masks on the same grid (uint8 0/1), label,
defect type and source path. ``preprocess.json`` beside the shards holds the
spec and each split's shards and counts. With a defect head at a larger
``head_isize`` (``preprocess.json``'s ``head_size``, ``[H, W]``; absent without) a record
also holds ``head_image``, the same image preprocessed at that size by the same function, and
its ROI and ground-truth masks are at that size: the grid of the anomaly maps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.tiling import map_size

INFO_FILE = "preprocess.json"
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "roi": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "defect_type": tf.io.FixedLenFeature([], tf.string),
    "path": tf.io.FixedLenFeature([], tf.string),
    # Whether ``mask`` is a ground truth (0: none, the zeros mean "unknown"); records
    # written before it existed read as 0.
    "has_mask": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    # The image at the defect head's size; empty where the head reads ``image``.
    "head_image": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode(
    image,
    roi,
    mask,
    label: int,
    defect_type: str,
    path: str,
    has_mask: bool = False,
    head_image=None,
) -> bytes:
    """One serialized ``tf.train.Example``; ``head_image`` only with a larger head."""
    features = {
        "image": _bytes_feature(np.asarray(image, np.float32).tobytes()),
        "roi": _bytes_feature(np.asarray(roi).astype(np.uint8).tobytes()),
        "mask": _bytes_feature(np.asarray(mask).astype(np.uint8).tobytes()),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "defect_type": _bytes_feature(str(defect_type).encode()),
        "path": _bytes_feature(str(path).encode()),
        "has_mask": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(has_mask)])),
    }
    if head_image is not None:
        features["head_image"] = _bytes_feature(np.asarray(head_image, np.float32).tobytes())
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def read_info(preprocess_dir: Path) -> dict:
    """``preprocess.json``: ``{"spec": ..., "splits": {split: {count, normal, ...}}}``."""
    return json.loads((Path(preprocess_dir) / INFO_FILE).read_text())


# What labelled defects in the training split turn on, where the config has it off.
LABELLED_SCORE_KIND = "head_residual"  # the head with the residual: README, Labelled defects
LABELLED_SYNTHETIC_SHARE = 0.5


def head_size(info: dict) -> tuple[int, ...]:
    """``(H, W)`` of the defect head's images the records hold; ``()``: none, the generator's.

    Records written before the head could keep the aspect say ``head_isize``: a square.
    """
    side = info.get("head_isize", 0)
    return tuple(int(s) for s in info.get("head_size", [side, side] if side else []))


def map_grid(info: dict) -> tuple[int, int]:
    """``(H, W)`` of the records' ROI and masks: the head's size, or ``map_size``."""
    return head_size(info) or tuple(map_size(info["spec"]))


def model_inputs(example: dict):
    """What the model and the scorer take of a record: ``image``, or a pair.

    The pair ``(image, head_image)`` where the defect head is larger than ``isize``.
    """
    if "head_image" in example:
        return example["image"], example["head_image"]
    return example["image"]


def labelled_settings(config, preprocess_dir: Path) -> dict[str, object]:
    """``{"model.defect_head": True, ...}``: what labelled defects turn on in ``config``.

    Empty without labelled defects, when the config already reads the head, or
    before preprocess has run (the stage that needs it says so).
    """
    if not (Path(preprocess_dir) / INFO_FILE).is_file():
        return {}
    return _labelled_changes(config, read_info(preprocess_dir))


def _labelled_changes(config, info: dict) -> dict[str, object]:
    """``labelled_settings`` from a read ``preprocess.json``."""
    if not info["splits"]["train"].get("abnormal"):
        return {}
    changes: dict[str, object] = {}
    if not config.model.defect_head:
        changes["model.defect_head"] = True
    if not config.train.synthetic_anomalies > 0:
        changes["train.synthetic_anomalies"] = LABELLED_SYNTHETIC_SHARE
    if "head" not in config.score.map_kinds:
        changes["score.kind"] = LABELLED_SCORE_KIND
    return changes


def with_resolved_spec(config, preprocess_dir: Path):
    """``config`` as the stages after preprocess run it.

    With what preprocess resolved (``channels: auto``, an empty ``tiles_image``, the
    head's size it stored images for: ``model.head_size`` and its short side
    ``model.head_isize``, ``[]`` and 0 where it does not apply) and what labelled
    defects turn on (``labelled_settings``). ``preprocess.json`` is read once.
    """
    p = config.preprocess
    info = None
    if (Path(preprocess_dir) / INFO_FILE).is_file():
        info = read_info(preprocess_dir)
        size = head_size(info)
        model = dataclasses.replace(
            config.model, head_isize=min(size, default=0), head_size=list(size)
        )
        config = dataclasses.replace(config, model=model)
    unresolved = {
        "channels": p.channels == "auto",
        "tiles_image": bool(p.tiles) and not p.tiles_image,
    }
    if any(unresolved.values()):
        spec = (info or read_info(preprocess_dir))["spec"]  # no preprocess yet: its error
        resolved = {key: spec[key] for key, pending in unresolved.items() if pending}
        config = dataclasses.replace(config, preprocess=dataclasses.replace(p, **resolved))
    for key, value in (_labelled_changes(config, info) if info else {}).items():
        section, name = key.split(".")
        changed = dataclasses.replace(getattr(config, section), **{name: value})
        config = dataclasses.replace(config, **{section: changed})
    return config


def read_split(preprocess_dir: Path, split: str) -> tf.data.Dataset:
    """The records of one split as a dataset of dicts (unbatched, in manifest order)."""
    info = read_info(preprocess_dir)
    (height, width), channels = map_size(info["spec"]), info["spec"]["channels"]
    grid, head = map_grid(info), head_size(info)
    files = [str(Path(preprocess_dir) / name) for name in info["splits"][split]["shards"]]

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        ex["image"] = tf.reshape(
            tf.io.decode_raw(ex["image"], tf.float32), (height, width, channels)
        )
        if head:
            ex["head_image"] = tf.reshape(
                tf.io.decode_raw(ex["head_image"], tf.float32), (*head, channels)
            )
        else:
            del ex["head_image"]
        ex["roi"] = tf.reshape(tf.io.decode_raw(ex["roi"], tf.uint8), grid)
        ex["mask"] = tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), grid)
        return ex

    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def normal_images(preprocess_dir: Path, split: str) -> tf.data.Dataset:
    """The normal images of a split (unbatched; pairs with a larger head), and their count."""
    count = read_info(preprocess_dir)["splits"][split]["normal"]
    data = read_split(preprocess_dir, split).filter(lambda ex: ex["label"] == 0)
    # A known length: Keras then counts steps instead of warning that data ran out.
    return data.map(model_inputs).apply(tf.data.experimental.assert_cardinality(count))


def labelled_defects(preprocess_dir: Path) -> tf.data.Dataset:
    """The training split's labelled defects (unbatched): ``(image, mask, has_mask)``.

    ``mask`` is float32 ``[H, W, 1]`` (at the head's size); ``has_mask`` 0.0 where
    only the image label is known; ``image`` a pair with a larger head (``model_inputs``).
    """
    data = read_split(preprocess_dir, "train").filter(lambda ex: ex["label"] == 1)

    def parts(ex):
        mask = tf.cast(ex["mask"][..., None], tf.float32)
        return model_inputs(ex), mask, tf.cast(ex["has_mask"], tf.float32)

    return data.map(parts)
