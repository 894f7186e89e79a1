"""Preprocess: run the shared preprocessing function over the manifest; write TFRecords.

    ganomaly preprocess --config configs/default.yaml --run default

Reads ``artifacts/<run>/ingest/manifest.csv``.

Writes ``artifacts/<run>/preprocess/``:
- ``<split>-<shard>.tfrecord``: per image the model input (float32
  ``[isize, isize, C]`` in [-1, 1]; with ``tiles`` the whole image at its map
  size), its ROI mask, its ground-truth mask on the same grid (zeros without
  one), label, defect type and source path
  (``pipeline/core/records.py``); at most ``preprocess.shard_images`` images
  per shard. With a defect head at a larger ``head_isize`` also the image at
  the head's ``[H, W]`` (``head_size``; square unless ``model.head_aspect:
  keep``), by the same function, and the ROI and ground-truth masks at that size
  (the anomaly maps' grid).
- ``preprocess.json``: the preprocessing spec (what the SavedModel replays)
  and the shards and counts of each split.
- ``input_statistics.csv``: per image its input statistics (brightness,
  contrast, sharpness, size, ... and the ROI circle; ``models/input_stats.py``),
  measured by the function the SavedModel runs on every request.
- ``input_statistics.json``: the training normals' distribution of each
  (median, spread, quantiles) and their files' channel counts: what "normal
  input" means, carried into the exported model card. ``preprocess.channels: auto`` is
  resolved here: 3 when any training image is colour, 1 otherwise; with
  ``tiles`` an empty ``tiles_image`` becomes the training images' median
  size. The later stages read the resolved values from this spec, and
  ``head_size`` (absent: none) as ``model.head_size``.
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

from components.image_files import load_image
from models import input_stats
from models.preprocessing import head_spec_of, preprocess, resize_mask
from models.tiling import TileGrid, map_size
from pipeline.core import records
from pipeline.core.config import Config
from pipeline.core.progress import progress

SPLITS = ("train", "val", "test")
DECODE_THREADS = 4
INPUT_STATISTICS_CSV = "input_statistics.csv"
INPUT_STATISTICS_JSON = input_stats.REFERENCE_FILE


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


def _write_split(
    rows: pd.DataFrame, split: str, spec: dict, out: Path, head: list[int] | None = None
) -> tuple[list, np.ndarray]:
    """Preprocesses one split in manifest order (and at the head's ``[H, W]``, when given).

    Returns:
        Its shard file names and its images' input statistics ``[N, S]``.
    """
    shard_size = spec["shard_images"]
    run_one = tf.function(lambda x: input_stats.measure(x, spec), reduce_retracing=True)
    head_spec = head_spec_of(spec, head) if head else None
    run_head = tf.function(lambda x: preprocess(x, head_spec), reduce_retracing=True)
    shards, writer, stats = [], None, []
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        loaded = _bounded_map(pool, lambda r: _load(r, spec["channels"]), rows.itertuples())
        pairs = progress(zip(rows.itertuples(), loaded), len(rows), f"[preprocess] {split}")
        for index, (row, (image, mask)) in enumerate(pairs):
            if index % shard_size == 0:
                if writer:
                    writer.close()
                shards.append(f"{split}-{len(shards):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(out / shards[-1]))
            model_input, roi, measured = run_one(tf.constant(image[None]))
            stats.append(measured[0].numpy())
            grid_spec, head_image = spec, None
            if head:  # the head's image; the ROI and mask on its grid
                grid_spec = head_spec
                head_input, roi = run_head(tf.constant(image[None]))
                head_image = head_input[0].numpy()
            if mask is None:
                small_mask = np.zeros(map_size(grid_spec), np.uint8)
            else:
                # A labelled defect's target keeps thin defects; test masks do not
                # change what the pixel metrics have always counted.
                small_mask = resize_mask(mask, grid_spec, keep_thin=split == "train")
            image = model_input[0].numpy()
            meta = (row.label, row.defect_type, row.path, mask is not None)
            encoded = records.encode(
                image, roi[0, ..., 0].numpy(), small_mask, *meta, head_image=head_image
            )
            writer.write(encoded)
    if writer:
        writer.close()
    width = len(input_stats.statistic_names(spec))
    return shards, np.array(stats, np.float64).reshape(-1, width)


def defect_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``{defect_type: {"images": n, "masked": m}}`` of a split's defective rows."""
    defects = rows[rows["label"] == 1]
    return {
        str(kind): {"images": len(group), "masked": int((group["mask_path"] != "").sum())}
        for kind, group in defects.groupby("defect_type")
    }


def auto_channels(manifest: pd.DataFrame) -> int:
    """``preprocess.channels: auto``: 3 when any training image is colour, else 1."""
    train = manifest[manifest["split"] == "train"]
    return 3 if (train["channels"] == 3).any() else 1


def usual_size(manifest: pd.DataFrame) -> list[int]:
    """``preprocess.tiles_image`` left empty: the training images' median ``[H, W]``.

    The median rather than the most common size: in a dataset of many sizes
    the most common one may be a handful of odd images.
    """
    train = manifest[manifest["split"] == "train"]
    return [round(float(train["height"].median())), round(float(train["width"].median()))]


def resolve(spec: dict, manifest: pd.DataFrame) -> dict:
    """The spec with ``channels: auto`` and an empty ``tiles_image`` resolved from the manifest."""
    spec = dict(spec)
    if spec["channels"] == "auto":
        spec["channels"] = auto_channels(manifest)
        print(f"[preprocess] channels: auto -> {spec['channels']}", flush=True)
    if spec["tiles"] and not spec["tiles_image"]:
        spec["tiles_image"] = usual_size(manifest)
    if spec["tiles"]:
        grid = TileGrid.of(spec)
        print(
            f"[preprocess] tiles: images at {spec['tiles_image']} px -> {list(grid.size)}, "
            f"{grid.count} tiles of {spec['isize']} each",
            flush=True,
        )
    return spec


def write_input_statistics(manifest: pd.DataFrame, stats: dict, spec: dict, out: Path) -> None:
    """``input_statistics.csv`` (every image) and ``.json`` (the training normals' reference)."""
    names = input_stats.statistic_names(spec)
    frames = [
        manifest[manifest["split"] == split][["path", "split", "label"]]
        .reset_index(drop=True)
        .join(pd.DataFrame(values, columns=names))
        for split, values in stats.items()
    ]
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(out / INPUT_STATISTICS_CSV, index=False, float_format="%.6g")
    normals = table[(table["split"] == "train") & (table["label"] == 0)]
    reference = input_stats.summarise(normals[names].to_numpy(), names)
    train = manifest[(manifest["split"] == "train") & (manifest["label"] == 0)]
    reference["file_channels"] = {
        str(k): int(v) for k, v in train["channels"].value_counts().items()
    }
    (out / INPUT_STATISTICS_JSON).write_text(json.dumps(reference, indent=1))


def larger_head_isize(config: Config, manifest: pd.DataFrame) -> int:
    """``model.head_isize`` (or ``head_size``'s short side) where it applies, else 0.

    It applies to a defect head (``model.defect_head``, or labelled defects in the
    training split, which turn one on) reading whole images larger than
    ``preprocess.isize``; not with ``preprocess.tiles``, which already read native
    pixels. So a config may set it once (``configs/mvtec.yaml``) and a run trained
    on normals alone stays as it was.
    """
    side, isize = min(config.model.head_size or [config.model.head_isize]), config.preprocess.isize
    labelled = ((manifest["split"] == "train") & (manifest["label"] == 1)).any()
    has_head = config.model.defect_head or bool(labelled)
    return side if has_head and side > isize and not config.preprocess.tiles else 0


def head_size(config: Config, manifest: pd.DataFrame) -> list[int]:
    """``[H, W]`` of the defect head's images where ``larger_head_isize`` applies, else ``[]``.

    ``model.head_aspect: keep`` (with ``resize: squash``) makes ``head_isize`` the short
    side and gives the long one the training images' median aspect, in multiples of 16:
    a 512 x 1280 frame is read at 128 x 320, not squashed 2.5 times harder along its
    length. ``model.head_size``, when set, is taken as it is.
    """
    side = larger_head_isize(config, manifest)
    if not side:
        return []
    if config.model.head_size:
        return [int(s) for s in config.model.head_size]
    if config.model.head_aspect != "keep" or config.preprocess.resize != "squash":
        return [side, side]
    height, width = usual_size(manifest)
    long_side = max(side, round(side * max(height, width) / min(height, width) / 16) * 16)
    return [side, long_side] if height <= width else [long_side, side]


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Preprocesses every split of the ingest manifest into TFRecord shards in ``out``."""
    import mlflow  # noqa: PLC0415

    manifest = pd.read_csv(inputs["ingest"] / "manifest.csv", keep_default_na=False)
    spec = resolve(dataclasses.asdict(config.preprocess), manifest)
    head = head_size(config, manifest)
    if head:
        print(f"[preprocess] the defect head's images at {head[0]} x {head[1]} px", flush=True)
    splits, stats = {}, {}
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        shards, stats[split] = _write_split(rows, split, spec, out, head)
        splits[split] = {
            "count": len(rows),
            "normal": int((rows["label"] == 0).sum()),
            "abnormal": int((rows["label"] == 1).sum()),
            "defects": defect_counts(rows),
            "shards": shards,
        }
        print(f"[preprocess] {split}: {len(rows)} images, {len(shards)} shard(s)", flush=True)
    info = {"spec": spec, **({"head_size": head} if head else {}), "splits": splits}
    (out / records.INFO_FILE).write_text(json.dumps(info, indent=2))
    write_input_statistics(manifest, stats, spec, out)
    for name in (records.INFO_FILE, INPUT_STATISTICS_CSV, INPUT_STATISTICS_JSON):
        mlflow.log_artifact(str(out / name), artifact_path="preprocess")
