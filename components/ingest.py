"""Ingest: list, open and check every image of a dataset; split it; write the manifest.

    ganomaly ingest --config configs/default.yaml --run default

Reads: ``data.source``, a dataset folder (MVTec AD, original GANomaly,
``normal/``+``abnormal/`` folders), a CSV file, or a built-in dataset
(``synthetic:valve-seats``, ``mnist:<digit>``, ``elpv``) generated under
``data/``. The source is only read, never written.

Writes ``artifacts/<run>/ingest/``:
- ``manifest.csv``: path, split (train/val/test), label, defect_type,
  mask_path, sha256, mask_sha256, width, height, channels, planted; one row
  per accepted image (the digests let evaluate check the files it reopens).
  Defective rows in ``train`` are the labelled defects the defect head learns
  from (``train/<defect>/`` or ``data.labelled_defects``, never in test);
  ``planted`` names the defect type of a test image that
  ``data.contamination`` turned into a training "normal" (empty otherwise).
- ``rejected.csv``: files set aside with ``data.on_bad_file: skip``, and why.
- ``report.md``, ``image_sizes.png``, ``samples.png``: the dataset report.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from components.image_files import BadFile, find_leaks, inspect_image, inspect_mask, load_image
from components.sources import layouts
from pipeline.core.config import Config
from pipeline.core.errors import DataError
from pipeline.core.progress import progress

MANIFEST_COLUMNS = [
    "path",
    "split",
    "label",
    "defect_type",
    "mask_path",
    "sha256",
    "mask_sha256",
    "width",
    "height",
    "channels",
    "planted",
]
DATA_DIR = Path(os.environ.get("GANOMALY_DATA_DIR", "data"))
# Share of the normals held out for test when a layout has no split of its own.
UNSPLIT_TEST_FRACTION = 0.2


def materialize_source(config: Config) -> Path:
    """The dataset folder of ``data.source``, generating a built-in one if needed.

    ``config.check_source`` has refused a source that is neither (``run_stage``).
    """
    source, data = config.data.source, config.data
    if source == "synthetic:valve-seats":
        from components.sources import valve_seats  # noqa: PLC0415

        name = f"valve-seats-s{data.seed}-n{data.synthetic_train}-{data.synthetic_test}"
        return valve_seats.generate(
            DATA_DIR / f"{name}-{data.synthetic_size}",
            data.synthetic_train,
            data.synthetic_test,
            size=data.synthetic_size,
            seed=data.seed,
        )
    if source.startswith("mnist:"):
        from components.sources import mnist  # noqa: PLC0415

        digit = source.partition(":")[2]
        return mnist.generate(DATA_DIR / f"mnist-{digit}-s{data.seed}", int(digit), seed=data.seed)
    if source == "elpv":
        from components.sources import elpv  # noqa: PLC0415

        try:
            return elpv.generate(DATA_DIR / f"elpv-s{data.seed}", seed=data.seed)
        except ImportError as err:
            raise DataError(str(err)) from None
    return Path(source).expanduser()


def _inspect(record: layouts.Record, root: Path | None, config: Config) -> dict:
    """One manifest row, or ``{"path", "reason"}`` for a rejected file.

    ``root`` bounds where symlinks may lead; None lets them lead anywhere.
    """
    try:
        info = inspect_image(record.path, root, config.data.max_pixels)
        mask_sha256 = ""
        if record.mask_path is not None:
            mask_sha256 = inspect_mask(record.mask_path, info, record.path)
        elif record.label == 1 and record.masks_promised:
            raise BadFile(record.path, "defective image without its mask")
    except BadFile as bad:
        return {"path": str(bad.path), "reason": bad.reason}
    return {
        "path": str(record.path),
        "split": record.split,
        "label": record.label,
        "defect_type": record.defect_type,
        "mask_path": str(record.mask_path) if record.mask_path else "",
        "sha256": info.sha256,
        "mask_sha256": mask_sha256,
        "width": info.width,
        "height": info.height,
        "channels": info.channels,
        "planted": "",
        "notes": "; ".join(info.notes),
    }


def inspect_all(records: list[layouts.Record], root: Path, config: Config):
    """Opens every file in parallel; returns (accepted rows, rejected rows)."""
    allowed_root = root if config.data.external_symlinks == "reject" else None
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        checked = pool.map(lambda r: _inspect(r, allowed_root, config), records)
        rows = list(progress(checked, len(records), "[ingest] checked"))
    accepted = [row for row in rows if "reason" not in row]
    rejected = [row for row in rows if "reason" in row]
    return accepted, rejected


def drop_leaks(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Removes test images whose bytes also appear in train or val.

    Runs after the splits are assigned, so layouts without splits of their own
    (folders, CSV without a split column) are checked too.
    """
    leaks = find_leaks(list(zip(frame["path"].map(Path), frame["split"], frame["sha256"])))
    rejected = [
        {"path": str(test_path), "reason": f"same file as {train_path} in train"}
        for train_path, test_path in leaks
    ]
    leaked = {row["path"] for row in rejected}
    return frame[~frame["path"].isin(leaked)].reset_index(drop=True), rejected


def assign_splits(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Carves validation (and test, for unsplit layouts) out of the data, seeded.

    Defects the layout puts in train stay there (labelled defects); with
    ``data.labelled_defects`` and ``data.contamination`` test defects join them,
    drawn by generators of their own so the validation split stays the same.
    """
    rng = np.random.default_rng(config.data.seed)
    frame = frame.sort_values("path").reset_index(drop=True)
    unsplit = frame["split"] == ""
    if unsplit.any():
        normals = frame.index[unsplit & (frame["label"] == 0)].to_numpy()
        test_count = int(round(UNSPLIT_TEST_FRACTION * len(normals)))
        frame.loc[rng.permutation(normals)[:test_count], "split"] = "test"
        frame.loc[unsplit & (frame["split"] == "") & (frame["label"] == 0), "split"] = "train"
        frame.loc[unsplit & (frame["label"] == 1), "split"] = "test"
    label_defects(frame, config.data.labelled_defects, config.data.seed)
    plant_defects(frame, config.data.contamination, config.data.seed)
    train = frame.index[(frame["split"] == "train") & (frame["label"] == 0)].to_numpy()
    val_count = int(round(config.data.val_fraction * len(train)))
    if config.data.val_fraction > 0:
        val_count = max(1, val_count)
    frame.loc[rng.permutation(train)[:val_count], "split"] = "val"
    if config.data.val_abnormal_fraction > 0:
        for _, group in frame[(frame["split"] == "test") & (frame["label"] == 1)].groupby(
            "defect_type"
        ):
            count = int(round(config.data.val_abnormal_fraction * len(group)))
            frame.loc[rng.permutation(group.index.to_numpy())[:count], "split"] = "val"
    return frame


def _test_defects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["split"] == "test") & (frame["label"] == 1)]


def label_defects(frame: pd.DataFrame, per_type: int, seed: int) -> None:
    """Moves ``per_type`` test defects of each type into train, in place (seeded).

    A test defect whose mask marks nothing (4 of Magnetic Tile's 103 ``uneven``)
    is not drawn: it would teach the head that its defect is nowhere, and the
    draw, not the user, chose it. It stays in test, where it counts per image.
    """
    if per_type == 0:
        return
    rng = np.random.default_rng([seed, 21])
    for defect, group in _test_defects(frame).groupby("defect_type"):
        if len(group) <= per_type:
            raise DataError(
                f"data.labelled_defects: {per_type} but defect type {defect!r} has "
                f"{len(group)} image(s); it needs {per_type + 1} (at least one left to test)"
            )
        order = rng.permutation(group.index.to_numpy())
        usable = (i for i in order if _marks_a_pixel(frame.at[i, "mask_path"]))
        picked = list(itertools.islice(usable, per_type))
        if len(picked) < per_type:
            raise DataError(
                f"data.labelled_defects: {per_type} but defect type {defect!r} has "
                f"{len(picked)} image(s) whose mask marks a pixel; it needs {per_type}"
            )
        frame.loc[picked, "split"] = "train"


def _marks_a_pixel(mask_path: str) -> bool:
    """True for an image label (no mask) or a mask with at least one defect pixel."""
    return not mask_path or bool((load_image(Path(mask_path), 1) > 127).any())


def plant_defects(frame: pd.DataFrame, share: float, seed: int) -> None:
    """Turns test defects into training "normals", ``share`` of them, in place (seeded).

    For measuring how training copes with a "good" folder that is not clean:
    ``planted`` keeps each one's defect type, and its mask is dropped.
    """
    if share == 0:
        return
    normals = int(((frame["split"] == "train") & (frame["label"] == 0)).sum())
    count = int(round(share / (1 - share) * normals))  # share of the contaminated train/good
    defects = _test_defects(frame)
    if count >= len(defects):
        raise DataError(
            f"data.contamination: {share} needs {count} defective test images; "
            f"there are {len(defects)}"
        )
    rng = np.random.default_rng([seed, 22])
    picked = rng.permutation(defects.index.to_numpy())[:count]
    frame.loc[picked, "planted"] = frame.loc[picked, "defect_type"]
    frame.loc[picked, ["split", "label", "defect_type", "mask_path", "mask_sha256"]] = [
        "train",
        0,
        "good",
        "",
        "",
    ]


def check_labelled_masks(frame: pd.DataFrame) -> None:
    """Each labelled defect's mask marks at least one pixel (what it teaches is there)."""
    labelled = frame[(frame["split"] == "train") & (frame["label"] == 1)]
    for row in labelled.itertuples():
        if not _marks_a_pixel(row.mask_path):
            raise DataError(f"{row.mask_path}: empty mask for labelled defect {row.path}")


def _check_splits(frame: pd.DataFrame, source: Path) -> None:
    for split in ("train", "val", "test"):
        if not (frame["split"] == split).any():
            raise DataError(f"{source}: no images left for the {split} split")


def log_dataset(frame: pd.DataFrame, manifest: Path, config: Config, root: Path) -> None:
    """The manifest as the run's MLflow dataset input: source, layout, digest, counts.

    The UI then shows which data a run saw; the manifest's sha256 tells two runs
    on the same files apart from two runs on a dataset that changed.
    """
    import mlflow  # noqa: PLC0415

    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    per_class = frame.groupby(["split", "defect_type"]).size()
    tags = {
        "source": config.data.source,
        "layout": config.data.layout,
        "manifest_sha256": digest,
        **{f"n_{split}_{kind}": str(n) for (split, kind), n in per_class.items()},
    }
    with warnings.catch_warnings():
        # MLflow's hints about schema inference and source kinds concern models, not this.
        warnings.simplefilter("ignore", UserWarning)
        name = config.experiment_name()
        dataset = mlflow.data.from_pandas(
            frame[MANIFEST_COLUMNS], source=str(root), name=name, digest=digest[:8]
        )
        mlflow.log_input(dataset, context="ingest", tags=tags)


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Lists, checks and splits ``data.source``; writes the manifest into ``out``."""
    import mlflow  # noqa: PLC0415

    from components import dataset_report  # noqa: PLC0415

    root = materialize_source(config)
    records = layouts.list_records(root, config.data.layout)
    accepted, rejected = inspect_all(records, root if root.is_dir() else root.parent, config)
    frame = assign_splits(pd.DataFrame(accepted, columns=[*MANIFEST_COLUMNS, "notes"]), config)
    frame, leaked = drop_leaks(frame)
    rejected += leaked
    if rejected and config.data.on_bad_file == "strict":
        lines = [f"{row['path']}: {row['reason']}" for row in rejected]
        raise DataError(
            f"{len(rejected)} bad file(s) (set data.on_bad_file: skip to set them aside):\n"
            + "\n".join(lines)
        )
    _check_splits(frame, root)
    check_labelled_masks(frame)
    frame[MANIFEST_COLUMNS].to_csv(out / "manifest.csv", index=False)
    pd.DataFrame(rejected, columns=["path", "reason"]).to_csv(out / "rejected.csv", index=False)
    counts = dataset_report.write(frame, rejected, out, root)
    # n_test_abnormal is evaluate's metrics.json name: logged once, there.
    mlflow.log_metrics({k: v for k, v in counts.items() if k != "n_test_abnormal"})
    log_dataset(frame, out / "manifest.csv", config, root)
    mlflow.log_artifacts(str(out), artifact_path="ingest")
    print(f"[ingest] {len(frame)} images from {root}, {len(rejected)} set aside", flush=True)
