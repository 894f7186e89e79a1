"""Preprocess: run the shared preprocessing function over the manifest; write TFRecords.

    ganomaly preprocess --config configs/default.yaml --run default

Reads ``artifacts/<run>/ingest/manifest.csv``.

Writes ``artifacts/<run>/preprocess/``:
- ``<split>-<shard>.tfrecord``: per image the model input (float32
  ``[isize, isize, C]`` in [-1, 1]), its ROI mask, its ground-truth mask at
  ``isize`` (zeros without one), label, defect type, split and source path;
  at most ``preprocess.shard_images`` images per shard.
- ``preprocess.json``: the preprocessing spec (what the SavedModel replays)
  and the shards and counts of each split.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from components.validation import load_image
from models.preprocessing import preprocess, resize_mask
from pipeline import artifacts
from pipeline.config import Config
from pipeline.progress import progress

SPLITS = ("train", "val", "test")
DECODE_THREADS = 4


def _load(row, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    image = load_image(Path(row.path), channels).astype(np.float32)
    mask = None
    if isinstance(row.mask_path, str) and row.mask_path:
        mask = (load_image(Path(row.mask_path), 1)[..., 0] > 127).astype(np.float32)
    return image, mask


def _bounded_map(pool, fn, items, ahead: int = 2 * DECODE_THREADS):
    """``pool.map`` in order, but with at most ``ahead`` results waiting.

    ``Executor.map`` submits everything at once, so decoded images would pile
    up in memory faster than they are written: memory would grow with the
    dataset instead of staying flat.
    """
    pending = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _example(image, roi, mask, row) -> bytes:
    features = {
        "image": _bytes_feature(image.astype(np.float32).tobytes()),
        "roi": _bytes_feature(roi.astype(np.uint8).tobytes()),
        "mask": _bytes_feature(mask.astype(np.uint8).tobytes()),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row.label)])),
        "defect_type": _bytes_feature(str(row.defect_type).encode()),
        "path": _bytes_feature(str(row.path).encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_split(rows: pd.DataFrame, split: str, spec: dict, out: Path) -> list[str]:
    """Preprocesses one split in manifest order; returns its shard file names."""
    shard_size = spec["shard_images"]
    run_one = tf.function(lambda x: preprocess(x, spec), reduce_retracing=True)
    isize = spec["isize"]
    shards, writer = [], None
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        loaded = _bounded_map(pool, lambda r: _load(r, spec["channels"]), rows.itertuples())
        pairs = progress(zip(rows.itertuples(), loaded), len(rows), f"[preprocess] {split}")
        for index, (row, (image, mask)) in enumerate(pairs):
            if index % shard_size == 0:
                if writer:
                    writer.close()
                shards.append(f"{split}-{len(shards):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(out / shards[-1]))
            model_input, roi = run_one(tf.constant(image[None]))
            if mask is None:
                small_mask = np.zeros((isize, isize), np.uint8)
            else:
                small_mask = resize_mask(mask, spec)
            writer.write(_example(model_input[0].numpy(), roi[0, ..., 0].numpy(), small_mask, row))
    if writer:
        writer.close()
    return shards


def read_split(preprocess_dir: Path, split: str) -> tf.data.Dataset:
    """The records of one split as a dataset of dicts (unbatched, in manifest order)."""
    info = json.loads((preprocess_dir / "preprocess.json").read_text())
    isize, channels = info["spec"]["isize"], info["spec"]["channels"]
    files = [str(preprocess_dir / name) for name in info["splits"][split]["shards"]]
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "roi": tf.io.FixedLenFeature([], tf.string),
        "mask": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "defect_type": tf.io.FixedLenFeature([], tf.string),
        "path": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        ex["image"] = tf.reshape(
            tf.io.decode_raw(ex["image"], tf.float32), (isize, isize, channels)
        )
        ex["roi"] = tf.reshape(tf.io.decode_raw(ex["roi"], tf.uint8), (isize, isize))
        ex["mask"] = tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), (isize, isize))
        return ex

    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def run(config: Config, run_path: Path) -> None:
    import mlflow  # noqa: PLC0415

    manifest = pd.read_csv(
        artifacts.require_stage(run_path, "ingest") / "manifest.csv", keep_default_na=False
    )
    spec = dataclasses.asdict(config.preprocess)
    splits = {}
    with artifacts.stage_output(run_path, "preprocess") as out:
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            shards = _write_split(rows, split, spec, out)
            splits[split] = {
                "count": len(rows),
                "normal": int((rows["label"] == 0).sum()),
                "abnormal": int((rows["label"] == 1).sum()),
                "shards": shards,
            }
            print(f"[preprocess] {split}: {len(rows)} images, {len(shards)} shard(s)", flush=True)
        info = {"spec": spec, "splits": splits}
        (out / "preprocess.json").write_text(json.dumps(info, indent=2))
        mlflow.log_artifact(str(out / "preprocess.json"), artifact_path="preprocess")
