"""components.dataset_report: counts, sizes, converted and rejected files, sample grid."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from components import dataset_report
from components.ingest import MANIFEST_COLUMNS

REJECTED = [{"path": "x.png", "reason": "empty file (0 bytes)"}]
NOTE = "16-bit grayscale scaled to 8 bits"

# split, label, defect_type, width, height, channels, with a mask, note
ROWS = [
    ("train", 0, "good", 20, 16, 1, False, ""),
    ("train", 0, "good", 24, 24, 1, False, ""),
    ("train", 0, "good", 40, 30, 3, False, NOTE),
    ("val", 0, "good", 20, 16, 1, False, ""),
    ("test", 0, "good", 16, 12, 1, False, ""),
    ("test", 1, "scratch", 32, 32, 1, True, ""),
    ("test", 1, "pit", 24, 20, 3, False, ""),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _png(path: Path, width: int, height: int, channels: int, seed: int) -> Path:
    # gray or blue-ish images: no red, so a red outline in the samples is the mask's
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 160, (height, width), dtype=np.uint8)
    if channels == 3:
        array = np.stack([gray // 4, gray // 2, gray], axis=-1)
        Image.fromarray(array, "RGB").save(path)
    else:
        Image.fromarray(gray, "L").save(path)
    return path


def _frame(root: Path) -> pd.DataFrame:
    records = []
    for i, (split, label, defect, width, height, channels, has_mask, note) in enumerate(ROWS):
        folder = root / split / defect
        folder.mkdir(parents=True, exist_ok=True)
        image = _png(folder / f"{i:03d}.png", width, height, channels, seed=i)
        mask_path, mask_sha = "", ""
        if has_mask:
            mask = np.zeros((height, width), np.uint8)
            mask[8:24, 10:22] = 255
            masks = root / "ground_truth" / defect
            masks.mkdir(parents=True, exist_ok=True)
            mask_file = masks / f"{i:03d}_mask.png"
            Image.fromarray(mask, "L").save(mask_file)
            mask_path, mask_sha = str(mask_file), _sha256(mask_file)
        records.append(
            {
                "path": str(image),
                "split": split,
                "label": label,
                "defect_type": defect,
                "mask_path": mask_path,
                "sha256": _sha256(image),
                "mask_sha256": mask_sha,
                "width": width,
                "height": height,
                "channels": channels,
                "planted": "",
                "notes": note,
            }
        )
    frame = pd.DataFrame(records)
    assert set(MANIFEST_COLUMNS) <= set(frame.columns)  # the frame ingest hands over
    return frame


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        assert image.width > 0 and image.height > 0
        return np.asarray(image.convert("RGB"))


def _red_pixels(array: np.ndarray) -> int:
    r, g, b = (array[..., c].astype(int) for c in range(3))
    return int(((r > 180) & (g < 90) & (b < 90)).sum())


def test_write_returns_the_counts_and_writes_the_report(tmp_path):
    root, out = tmp_path / "dataset", tmp_path / "out"
    out.mkdir()
    frame = _frame(root)

    counts = dataset_report.write(frame, REJECTED, out, root)

    # ROWS by hand: 3 train, 1 val, 3 test of which scratch and pit are abnormal
    assert counts == {
        "n_train": 3,
        "n_val": 1,
        "n_test": 3,
        "n_rejected": 1,
        "n_test_abnormal": 2,
        "n_train_labelled": 0,
        "n_planted": 0,
    }
    assert all(type(value) is int for value in counts.values())  # loggable as metrics

    lines = (out / "report.md").read_text().splitlines()
    assert lines[0] == f"# Dataset report: {root}"
    assert "7 images accepted, 1 set aside." in lines
    # one row per defect type (alphabetical) and the totals; columns train, val, test
    table = lines.index("| defect_type | train | val | test |")
    assert lines[table + 1] == "|---|---|---|---|"
    assert lines[table + 2 : table + 6] == [
        "| good | 3 | 1 | 1 |",
        "| pit | 0 | 0 | 1 |",
        "| scratch | 0 | 0 | 1 |",
        "| total | 3 | 1 | 3 |",
    ]
    assert "width 16-40 px, height 12-32 px, channels [1, 3]" in lines
    noted = frame.loc[frame["notes"] != "", "path"].item()
    assert "## Converted on reading" in lines
    assert f"- `{noted}`: {NOTE}" in lines
    rejected = lines.index("## Rejected files")
    assert lines[rejected + 2 :] == ["- `x.png`: empty file (0 bytes)"]

    sizes, samples = _decoded(out / "image_sizes.png"), _decoded(out / "samples.png")
    assert sizes.std() > 0 and samples.std() > 0  # something was drawn
    assert _red_pixels(samples) > 0  # the scratch's mask outlined in red


def test_write_without_notes_rejects_or_masks(tmp_path):
    root, out = tmp_path / "dataset", tmp_path / "out"
    out.mkdir()
    frame = _frame(root)
    frame = frame[frame["defect_type"] != "scratch"].assign(notes="")

    counts = dataset_report.write(frame, [], out, root)

    assert counts == {
        "n_train": 3,
        "n_val": 1,
        "n_test": 2,
        "n_rejected": 0,
        "n_test_abnormal": 1,
        "n_train_labelled": 0,
        "n_planted": 0,
    }
    text = (out / "report.md").read_text()
    assert "6 images accepted, 0 set aside." in text
    assert "## Converted on reading" not in text
    assert text.endswith("## Rejected files\n\nnone\n")
    assert "| scratch |" not in text
    assert "width 16-40 px, height 12-30 px, channels [1, 3]" in text
    assert _red_pixels(_decoded(out / "samples.png")) == 0  # no mask, no outline


def test_the_report_says_what_training_learns_from(tmp_path):
    root, out = tmp_path / "dataset", tmp_path / "out"
    out.mkdir()
    frame = _frame(root)
    defect = frame.index[frame["label"] == 1][0]
    frame.loc[defect, "split"] = "train"  # a labelled defect
    normal = frame.index[(frame["split"] == "train") & (frame["label"] == 0)][0]
    frame.loc[normal, "planted"] = "crack"

    counts = dataset_report.write(frame, [], out, root)

    assert counts["n_train_labelled"] == 1 and counts["n_planted"] == 1
    text = (out / "report.md").read_text()
    kind = frame.loc[defect, "defect_type"]
    masked = int(bool(frame.loc[defect, "mask_path"]))
    assert f"1 labelled defect(s) ({kind} 1); {masked} with a mask" in text
    assert "1 defective image(s) planted among the training normals" in text
    assert "../evaluate/suspects.csv" in text
