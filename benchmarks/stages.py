"""python -m benchmarks.stages: ingest + preprocess images/s and peak memory (``make bench``).

    python -m benchmarks.stages [--sizes 1000 5000] [--side 900] [--isize 128]
                             [--format png|jpeg] [--workdir DIR] [--keep]

For each size N, generates N grayscale ``side x side`` PNGs (or JPEGs, whose
decoder also reads the EXIF orientation) in the MVTec layout
(90% ``train/good``, the rest ``test/good`` plus a few ``test/<defect>`` images
with their ``ground_truth`` masks), cached under ``WORKDIR/data`` so re-runs
do not regenerate them. Then runs the real ``ganomaly ingest`` and ``ganomaly
preprocess`` commands on it as subprocesses, resizing to ``isize``, and
records for each stage its wall time (process start-up included), images per
second and peak resident memory (the child's ``ru_maxrss`` from ``os.wait4``).

Prints one table row per (size, stage) and writes the rows to
``WORKDIR/results.json`` (``bench/results.json`` by default). The pipeline
outputs (``WORKDIR/artifacts``, ``WORKDIR/mlflow``) are deleted after each
size unless ``--keep`` is given; the generated images are always kept.
Comparing the peak memory of the sizes shows whether memory stays flat as the
dataset grows.

Then the same for training (``--train-sizes``, 1,000 and 10,000 images by default):
one epoch of ``ganomaly train`` with tiny networks at 32x32 on random records
written straight into a preprocess folder, once streaming the split from the
TFRecords (``train.cache=none``) and once cached in memory (``train.cache=memory``);
the peak RSS of each goes to ``WORKDIR/train_memory.json`` and one JSON line,
``{"train_peak_rss_mib": {"1000": {"none": ..., "memory": ...}, ...}}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = REPO / "bench"
CONFIG = REPO / "configs" / "default.yaml"
STAGES = ("ingest", "preprocess")
DEFECT = "scratch"
COMPLETE = ".complete"  # marker of a fully generated dataset folder
NOISE_LEVELS = 8  # uniform pixel noise amplitude; keeps the PNGs realistic in size


def _layout(count: int) -> list[tuple[str, int]]:
    """The ``(class folder, index)`` of each of ``count`` images, 90% of them train.

    Args:
        count: Total number of images.

    Returns:
        ``("train/good", i)``, ``("test/good", i)`` and ``("test/<defect>", i)``
        entries; at least one test normal and one defect when ``count >= 3``.
    """
    test = max(2, count // 10)
    defects = max(1, count // 200)
    train = count - test
    return (
        [("train/good", i) for i in range(train)]
        + [("test/good", i) for i in range(test - defects)]
        + [(f"test/{DEFECT}", i) for i in range(defects)]
    )


def _image(seed: int, side: int, defect: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One synthetic part: a gradient, a bright ring, noise, and optionally a scratch.

    Args:
        seed: Makes every image different (no duplicate files across splits).
        side: Width and height in pixels.
        defect: Whether to draw a dark scratch and return its mask.

    Returns:
        ``(uint8 [side, side] image, uint8 mask in {0, 255} or None)``.
    """
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:side, 0:side]
    y = y.astype(np.float32) / side
    x = x.astype(np.float32) / side
    angle = rng.uniform(0, 2 * np.pi)
    image = 50 + 40 * (np.cos(angle) * x + np.sin(angle) * y)
    cy, cx = 0.5 + rng.uniform(-0.05, 0.05, size=2)
    radius = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    ring_r, ring_w = rng.uniform(0.25, 0.35), rng.uniform(0.02, 0.04)
    image = image + rng.uniform(100, 140) * np.exp(-(((radius - ring_r) / ring_w) ** 2))
    image = np.clip(image, 0, 255 - NOISE_LEVELS).astype(np.uint8)
    image += rng.integers(0, NOISE_LEVELS, size=(side, side), dtype=np.uint8)
    if not defect:
        return image, None
    # A short straight scratch on the ring: a thick line segment.
    theta = rng.uniform(0, 2 * np.pi)
    y0, x0 = cy + ring_r * np.sin(theta), cx + ring_r * np.cos(theta)
    dy, dx = rng.uniform(-0.08, 0.08, size=2)
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / (dy * dy + dx * dx + 1e-9), 0, 1)
    dist = np.sqrt((y - y0 - t * dy) ** 2 + (x - x0 - t * dx) ** 2)
    mask = dist < max(2.0 / side, 0.006)
    image[mask] = image[mask] // 4
    return image, mask.astype(np.uint8) * 255


def _write_one(job: tuple[str, int, int, str, str]) -> None:
    """Writes one image (and its PNG mask) of a dataset; runs in a worker process."""
    root, side, seed, folder, image_format = job
    defect = folder == f"test/{DEFECT}"
    image, mask = _image(seed, side, defect)
    if image_format == "jpeg":
        path = Path(root) / folder / f"{seed:06d}.jpg"
        Image.fromarray(image, "L").save(path, "JPEG", quality=95)
    else:
        path = Path(root) / folder / f"{seed:06d}.png"
        Image.fromarray(image, "L").save(path, "PNG", compress_level=1)
    if mask is not None:
        mask_path = Path(root) / "ground_truth" / DEFECT / f"{path.stem}_mask.png"
        Image.fromarray(mask, "L").save(mask_path, "PNG")


def generate(root: Path, count: int, side: int, image_format: str = "png") -> Path:
    """Generates (or finds cached) a dataset of ``count`` images in the MVTec layout.

    Args:
        root: The dataset folder; reused as is when it holds a complete dataset.
        count: Number of images (masks not counted).
        side: Width and height of each image.
        image_format: ``png`` or ``jpeg`` (the masks are PNGs either way).

    Returns:
        ``root``.
    """
    marker = root / COMPLETE
    if marker.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("train/good", "test/good", f"test/{DEFECT}", f"ground_truth/{DEFECT}"):
        (root / folder).mkdir(parents=True)
    layout = enumerate(_layout(count))
    jobs = [(str(root), side, seed, folder, image_format) for seed, (folder, _) in layout]
    workers = max(1, min(os.cpu_count() or 1, len(jobs)))
    start = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
            pass
    marker.write_text(f"{count} {image_format} images, {side}x{side}\n")
    print(f"[bench] generated {count} images in {time.perf_counter() - start:.1f} s: {root}")
    return root


def _ganomaly() -> list[str]:
    """``python -m pipeline.cli`` of this Python, run in this checkout (``_run_measured``)."""
    return [sys.executable, "-m", "pipeline.cli"]


def _run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Runs ``cmd`` to completion; returns (wall seconds, peak RSS in MiB).

    Raises:
        RuntimeError: If the command fails; the message holds the end of its output.
    """
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def run_bench(
    sizes: list[int],
    side: int = 900,
    isize: int = 128,
    workdir: Path = DEFAULT_WORKDIR,
    keep: bool = False,
    image_format: str = "png",
) -> list[dict]:
    """Benchmarks ingest and preprocess at each dataset size.

    Args:
        sizes: Dataset sizes (number of images), each at least 3.
        side: Width and height of the generated PNGs.
        isize: ``preprocess.isize``, the model input size.
        workdir: Holds the cached datasets, the pipeline outputs and ``results.json``.
        keep: Keep each size's pipeline outputs (artifacts, MLflow store).
        image_format: ``png`` or ``jpeg``: the generated images' format.

    Returns:
        One dict per (size, stage): ``images``, ``stage``, ``seconds``,
        ``images_per_s``, ``peak_rss_mib``, plus ``side`` and ``isize``.

    Raises:
        ValueError: If a size is below 3.
        RuntimeError: If a pipeline stage fails.
    """
    workdir = Path(workdir).resolve()
    if any(size < 3 for size in sizes):
        raise ValueError(f"sizes must be at least 3 images, got {sizes}")
    rows = []
    for size in sizes:
        suffix = "" if image_format == "png" else f"-{image_format}"
        root = generate(
            workdir / "data" / f"mvtec-n{size}-s{side}{suffix}", size, side, image_format
        )
        run = f"bench-n{size}-s{side}-i{isize}{suffix}"
        artifacts_root, store = workdir / "artifacts", workdir / "mlflow" / run
        shutil.rmtree(artifacts_root / run, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        env = dict(
            os.environ,
            GANOMALY_ARTIFACTS=str(artifacts_root),
            GANOMALY_DATA_DIR=str(workdir / "data"),
            MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}",
            TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        )
        overrides = [
            f"preprocess.isize={isize}",
            f"data.source={root}",
            "data.val_fraction=0.1",
        ]
        args = ["--config", str(CONFIG), "--run", run]
        for override in overrides:
            args += ["--set", override]
        for stage in STAGES:
            log = artifacts_root / f"{run}-{stage}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            seconds, peak = _run_measured([*_ganomaly(), stage, *args], env, log)
            row = {
                "images": size,
                "stage": stage,
                "seconds": round(seconds, 2),
                "images_per_s": round(size / seconds, 1),
                "peak_rss_mib": round(peak, 1),
                "side": side,
                "isize": isize,
                "format": image_format,
            }
            rows.append(row)
            print(_format_row(row), flush=True)
        if not keep:
            shutil.rmtree(artifacts_root / run, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
    (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


# Training's peak memory: tiny networks, 1 epoch, on synthetic records written straight
# into a preprocess folder (no PNGs to decode), with the split cached and streamed.
TRAIN_SIZES = (1000, 10000)
TRAIN_OVERRIDES = (
    "model.nz=16",
    "model.ngf=8",
    "model.ndf=8",
    "train.epochs=1",
    "train.batch_size=64",
)


def write_preprocessed(folder: Path, count: int, isize: int) -> Path:
    """A finished preprocess stage of ``count`` random training normals (and 64 validation).

    Args:
        folder: ``artifacts/<run>/preprocess``; replaced.
        count: Training images.
        isize: Their side (one channel).

    Returns:
        ``folder``.
    """
    import tensorflow as tf  # noqa: PLC0415 - slow import, only for this bench

    from pipeline.core import artifacts, records  # noqa: PLC0415

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(count)
    blank = np.zeros((isize, isize), np.uint8)
    splits = {}
    for split, n in (("train", count), ("val", 64)):
        shard = f"{split}-00000.tfrecord"
        with tf.io.TFRecordWriter(str(folder / shard)) as writer:
            for i in range(n):
                image = rng.uniform(-1, 1, (isize, isize, 1)).astype(np.float32)
                writer.write(records.encode(image, blank + 1, blank, 0, "good", f"{split}/{i}"))
        splits[split] = {"count": n, "normal": n, "abnormal": 0, "shards": [shard]}
    info = {"spec": {"isize": isize, "channels": 1}, "splits": splits}
    (folder / records.INFO_FILE).write_text(json.dumps(info))
    (folder / artifacts.SUCCESS).write_text("bench\n")
    return folder


def run_train_memory(
    sizes: tuple[int, ...] = TRAIN_SIZES,
    isize: int = 32,
    caches: tuple[str, ...] = ("none", "memory"),
    workdir: Path = DEFAULT_WORKDIR,
) -> list[dict]:
    """Peak RSS of ``ganomaly train`` (one epoch) at each training set size and cache mode.

    Args:
        sizes: Training images per run.
        isize: Image side.
        caches: ``train.cache`` values to measure.
        workdir: Holds the runs (deleted after each) and ``train_memory.json``.

    Returns:
        One dict per (size, cache): ``images``, ``cache``, ``seconds``, ``peak_rss_mib``.
    """
    workdir = Path(workdir).resolve()
    rows = []
    for size in sizes:
        for cache in caches:
            run = f"bench-train-n{size}-{cache}"
            artifacts_root, store = workdir / "artifacts", workdir / "mlflow" / run
            write_preprocessed(artifacts_root / run / "preprocess", size, isize)
            store.mkdir(parents=True, exist_ok=True)
            env = dict(
                os.environ,
                GANOMALY_ARTIFACTS=str(artifacts_root),
                MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}",
                TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            )
            sets = [f"preprocess.isize={isize}", f"train.cache={cache}", *TRAIN_OVERRIDES]
            args = ["train", "--config", str(CONFIG), "--run", run]
            args += [arg for override in sets for arg in ("--set", override)]
            log = artifacts_root / f"{run}.log"
            seconds, peak = _run_measured([*_ganomaly(), *args], env, log)
            row = {"images": size, "cache": cache, "seconds": round(seconds, 2)}
            rows.append({**row, "peak_rss_mib": round(peak, 1), "isize": isize})
            print(f"[bench] train {json.dumps(rows[-1])}", flush=True)
            shutil.rmtree(artifacts_root / run, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
    (workdir / "train_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


HEADER = f"{'images':>7}  {'stage':<10}  {'seconds':>8}  {'images/s':>9}  {'peak RSS MiB':>12}"


def _format_row(row: dict) -> str:
    return (
        f"{row['images']:>7}  {row['stage']:<10}  {row['seconds']:>8.1f}  "
        f"{row['images_per_s']:>9.1f}  {row['peak_rss_mib']:>12.0f}"
    )


def format_table(rows: list[dict]) -> str:
    """The rows as a text table, plus each stage's memory growth across the sizes."""
    lines = [HEADER, *(_format_row(row) for row in rows)]
    for stage in STAGES:
        mine = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["images"])
        if len(mine) >= 2 and mine[-1]["images"] > mine[0]["images"]:
            first, last = mine[0], mine[-1]
            growth = last["peak_rss_mib"] - first["peak_rss_mib"]
            per_image = growth * 1024 / (last["images"] - first["images"])
            lines.append(
                f"{stage}: peak RSS {growth:+.0f} MiB from {first['images']} to "
                f"{last['images']} images ({per_image:+.1f} KiB per extra image)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--side", type=int, default=900, help="generated image side, pixels")
    parser.add_argument("--isize", type=int, default=128, help="preprocess.isize")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", dest="image_format")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep the pipeline outputs")
    parser.add_argument(
        "--train-sizes",
        type=int,
        nargs="*",
        default=list(TRAIN_SIZES),
        help="training set sizes for train's peak memory (none: skip)",
    )
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    rows = run_bench(
        args.sizes,
        args.side,
        args.isize,
        args.workdir,
        keep=args.keep,
        image_format=args.image_format,
    )
    print()
    print(format_table(rows))
    print(f"results: {Path(args.workdir).resolve() / 'results.json'}")
    if args.train_sizes:
        memory = run_train_memory(tuple(args.train_sizes), workdir=args.workdir)
        print(json.dumps({"train_peak_rss_mib": by_size_and_cache(memory)}), flush=True)
    return 0


def by_size_and_cache(rows: list[dict]) -> dict:
    """``{"1000": {"none": MiB, "memory": MiB}, ...}``."""
    table: dict = {}
    for row in rows:
        table.setdefault(str(row["images"]), {})[row["cache"]] = row["peak_rss_mib"]
    return table


if __name__ == "__main__":
    sys.exit(main())
