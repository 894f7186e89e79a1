"""List the images of a dataset folder (or CSV file) as records, whatever its layout.

Four layouts are recognised:

* ``mvtec``: ``train/good/*``, ``test/good/*``, ``test/<defect>/*`` and, optionally,
  ``ground_truth/<defect>/<stem>_mask.png``. When a ``ground_truth`` folder exists, every
  defective image is promised a mask (a missing one is reported by validation).
  ``train/<defect>/*``: labelled defects the defect head learns from (masks as for test).
* ``ganomaly`` (the original GANomaly layout): ``train/0.normal/``, ``test/0.normal/`` and
  ``test/1.abnormal/``; defect type ``"abnormal"``, no masks.
* ``folders``: ``normal/`` and ``abnormal/`` (files directly in ``abnormal/`` get defect type
  ``"abnormal"``; ``abnormal/<defect>/`` subfolders name the defect type) plus an optional
  ``masks/`` folder holding, for a defective image, a mask with the same file name or the same
  stem and any image extension (looked up in ``masks/<defect>/`` first, then ``masks/``).
  The layout does not define splits, so every record has ``split == ""``; the ingest step
  assigns them (normals split train/test with a seed, abnormals all go to test).
  ``train/<defect>/*``: labelled defects to learn from (masks in ``masks/<defect>/``).
* ``csv``: a CSV file with header ``path,label[,mask_path][,split][,defect_type]``; paths are
  relative to the CSV's folder, labels are ``0``/``1``, ``normal``/``abnormal`` or
  ``good``/``defect``, splits are ``train``, ``test`` or empty (unassigned). A defective
  row with split ``train`` is a labelled defect to learn from; without a ``mask_path`` it
  teaches the defect head by its image label only.

Files in class folders that are not images are listed too, so that validation rejects them
by name as unsupported formats; hidden files and ``*_mask.*`` files are skipped. Only the
files directly inside a class folder are listed (no recursion beyond the layout's depth).
Paths are absolute but not resolved, so validation can still tell a symlink leaving the root.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from pipeline.core.config import LAYOUTS
from pipeline.core.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_LABELS = {"0": 0, "normal": 0, "good": 0, "1": 1, "abnormal": 1, "defect": 1}
_SPLITS = ("train", "test", "")


@dataclasses.dataclass(frozen=True)
class Record:
    """One image of the dataset.

    Attributes:
        path: Absolute (unresolved) path of the image.
        split: ``"train"`` or ``"test"`` as the layout defines it, ``""`` when unassigned.
        label: 0 for normal, 1 for abnormal.
        defect_type: ``"good"`` for normals, else the defect class name.
        mask_path: Path of the ground-truth mask, or None.
        masks_promised: True where the layout promises a mask for this defective image.

    """

    path: Path
    split: str
    label: int
    defect_type: str
    mask_path: Path | None = None
    masks_promised: bool = False


def detect_layout(root: Path) -> str:
    """Return the layout of ``root``: ``"mvtec"``, ``"ganomaly"``, ``"folders"`` or ``"csv"``.

    Raises:
        DataError: If ``root`` is missing or matches no layout.

    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: dataset root does not exist")
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{root}: not a dataset folder or a .csv file")
    if (root / "train" / "0.normal").is_dir():
        return "ganomaly"
    if (root / "train" / "good").is_dir():
        return "mvtec"
    if (root / "normal").is_dir():
        return "folders"
    raise DataError(
        f"{root}: layout not recognised (expected train/good/ for mvtec, train/0.normal/ for "
        "ganomaly, normal/ + abnormal/ for folders, or a .csv file)"
    )


def list_records(root: Path, layout: str = "auto") -> list[Record]:
    """List every file of the dataset at ``root``, sorted deterministically.

    Args:
        root: Dataset folder, or CSV file for the ``csv`` layout.
        layout: One of ``LAYOUTS``, or ``"auto"`` to detect it.

    Returns:
        Records sorted by split, label, defect type and path.

    Raises:
        DataError: If the root is missing, the layout is unknown or does not fit, a class
            folder is empty, or the CSV has missing columns or bad values.

    """
    root = Path(os.path.abspath(root))
    if layout == "auto":
        layout = detect_layout(root)
    elif not root.exists():
        raise DataError(f"{root}: dataset root does not exist")
    listers = {"mvtec": _mvtec, "ganomaly": _ganomaly, "folders": _folders, "csv": _csv}
    if layout not in listers:
        raise DataError(
            f"{root}: unknown layout {layout!r} (expected auto or {', '.join(LAYOUTS)})"
        )
    records = listers[layout](root)
    return sorted(records, key=lambda r: (r.split, r.label, r.defect_type, str(r.path)))


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _class_files(folder: Path, required: bool = True) -> list[Path]:
    """Return the non-hidden, non-mask files directly in ``folder``.

    Raises:
        DataError: If ``folder`` is missing (when required) or holds no such file.

    """
    if not folder.is_dir():
        if required:
            raise DataError(f"{folder}: class folder is missing")
        return []
    files = sorted(
        p
        for p in folder.iterdir()
        if not _is_hidden(p) and not p.is_dir() and not p.stem.lower().endswith("_mask")
    )
    if not files:
        raise DataError(f"{folder}: empty class folder")
    return files


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def _find_mask(folders: list[Path], image: Path, suffix: str = "") -> Path | None:
    """Find ``<stem><suffix><ext>`` in the first folder that has it, trying image extensions."""
    for folder in folders:
        names = [image.name] if not suffix else []
        names += [f"{image.stem}{suffix}{ext}" for ext in IMAGE_EXTENSIONS]
        names += [f"{image.stem}{suffix}{ext.upper()}" for ext in IMAGE_EXTENSIONS]
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _mvtec(root: Path) -> list[Record]:
    records = [Record(p, "train", 0, "good") for p in _class_files(root / "train" / "good")]
    ground_truth = root / "ground_truth"
    promised = ground_truth.is_dir()
    for split in ("train", "test"):
        for folder in _subfolders(root / split):
            defect = folder.name
            if split == "train" and defect == "good":
                continue
            for path in _class_files(folder):
                if defect == "good":
                    records.append(Record(path, split, 0, "good"))
                    continue
                mask = _find_mask([ground_truth / defect], path, "_mask") if promised else None
                records.append(Record(path, split, 1, defect, mask, promised))
    return records


def _ganomaly(root: Path) -> list[Record]:
    records = [Record(p, "train", 0, "good") for p in _class_files(root / "train" / "0.normal")]
    test = root / "test"
    records += [Record(p, "test", 0, "good") for p in _class_files(test / "0.normal", False)]
    records += [Record(p, "test", 1, "abnormal") for p in _class_files(test / "1.abnormal", False)]
    return records


def _folders(root: Path) -> list[Record]:
    records = [Record(p, "", 0, "good") for p in _class_files(root / "normal")]
    abnormal, masks = root / "abnormal", root / "masks"
    promised = masks.is_dir()
    # Files directly in abnormal/ are type "abnormal"; each subfolder is its own defect type.
    groups: list[tuple[str, list[Path]]] = []
    if abnormal.is_dir() and any(p.is_file() and not _is_hidden(p) for p in abnormal.iterdir()):
        groups.append(("abnormal", _class_files(abnormal)))
    groups += [(sub.name, _class_files(sub)) for sub in _subfolders(abnormal)]
    if abnormal.is_dir() and not groups:
        raise DataError(f"{abnormal}: empty class folder")
    for defect, paths in groups:
        for path in paths:
            mask = _find_mask([masks / defect, masks], path) if promised else None
            records.append(Record(path, "", 1, defect, mask, promised))
    for sub in _subfolders(root / "train"):  # labelled defects to learn from
        for path in _class_files(sub):
            mask = _find_mask([masks / sub.name, masks], path) if promised else None
            records.append(Record(path, "train", 1, sub.name, mask, promised))
    return records


def _csv(csv_path: Path) -> list[Record]:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            missing = [c for c in ("path", "label") if c not in fields]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} in header")
            records = [_csv_row(csv_path, base, reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path}: not UTF-8 text ({err.reason})") from err
    except csv.Error as err:
        raise DataError(f"{csv_path}: malformed CSV ({err})") from err
    if not records:
        raise DataError(f"{csv_path}: no rows after the header")
    return records


def _csv_row(csv_path: Path, base: Path, line: int, row: dict[str, str | None]) -> Record:
    """Turn one CSV row into a record; ``line`` is the row's line number for error messages."""

    def cell(name: str) -> str:
        return (row.get(name) or "").strip()

    where = f"{csv_path}:{line}"
    if not cell("path"):
        raise DataError(f"{where}: empty path")
    label = _LABELS.get(cell("label").lower())
    if label is None:
        raise DataError(
            f"{where}: bad label {cell('label')!r} (expected 0/1, normal/abnormal or good/defect)"
        )
    split = cell("split").lower()
    if split not in _SPLITS:
        raise DataError(f"{where}: bad split {cell('split')!r} (expected train, test or empty)")
    defect = cell("defect_type") or ("good" if label == 0 else "abnormal")
    if label == 0 and defect != "good":
        raise DataError(f"{where}: normal image with defect_type {defect!r} (expected good)")
    mask = Path(os.path.abspath(base / cell("mask_path"))) if cell("mask_path") else None
    path = Path(os.path.abspath(base / cell("path")))
    return Record(path, split, label, defect, mask, masks_promised=label == 1 and mask is not None)
