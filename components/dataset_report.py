"""The dataset report that ingest writes: counts, sizes, rejected files, samples.

    dataset_report.write(manifest_frame, rejected_rows, out_dir, source_root)

Writes ``report.md``, ``image_sizes.png`` and ``samples.png`` (a few images
per class, ground-truth masks outlined in red) into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from components import overlay  # noqa: E402
from components.image_files import load_image  # noqa: E402

SAMPLES_PER_CLASS = 4
SAMPLE_SIDE = 160  # pixels a sample is shrunk (never enlarged) to fit


def _counts_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = frame.pivot_table(
        index="defect_type", columns="split", values="path", aggfunc="count", fill_value=0
    )
    table = table.reindex(columns=[c for c in ("train", "val", "test") if c in table.columns])
    table.loc["total"] = table.sum()
    return table


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join([table.index.name or "", *map(str, table.columns)]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in table.iterrows()]
    return "\n".join([header, rule, *rows])


def _size_histogram(frame: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(frame["width"], frame["height"], s=8, alpha=0.5)
    ax.set(xlabel="width (px)", ylabel="height (px)", title="Image sizes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _sample_grid(frame: pd.DataFrame, path: Path) -> None:
    """A few images per class, one row each, ground truth outlined in red (Pillow)."""
    classes = sorted(frame["defect_type"].unique(), key=lambda c: (c != "good", c))
    cell, label = SAMPLE_SIDE + overlay.GAP, overlay.HEADER
    grid = Image.new("RGB", (SAMPLES_PER_CLASS * cell, len(classes) * (cell + label)), "white")
    pen = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for row, cls in enumerate(classes):
        top = row * (cell + label)
        pen.text((2, top + 4), cls, fill=(0, 0, 0), font=font)
        picked = frame[frame["defect_type"] == cls].head(SAMPLES_PER_CLASS)
        for col, item in enumerate(picked.itertuples()):
            grid.paste(_sample(item), (col * cell, top + label))
    grid.save(path, compress_level=1)


def _sample(item) -> Image.Image:
    """One image fitted into ``SAMPLE_SIDE`` square, its mask's outline in red."""
    pixels = load_image(Path(item.path), 3)
    if item.mask_path:
        with Image.open(item.mask_path) as mask:
            inside = np.asarray(mask.convert("L")) > 127
        if inside.shape == pixels.shape[:2]:
            pixels = pixels.copy()
            pixels[overlay.outline(inside)] = overlay.RED
    picture = Image.fromarray(pixels)
    picture.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.NEAREST)
    return picture


def write(frame: pd.DataFrame, rejected: list[dict], out: Path, root: Path) -> dict:
    """Writes the report files; returns counts to log as metrics."""
    table = _counts_table(frame)
    _size_histogram(frame, out / "image_sizes.png")
    _sample_grid(frame, out / "samples.png")
    notes = frame[frame["notes"].astype(bool)] if "notes" in frame else frame.iloc[:0]
    lines = [
        f"# Dataset report: {root}",
        "",
        f"{len(frame)} images accepted, {len(rejected)} set aside.",
        "",
        "## Images per split and defect type",
        "",
        _markdown(table),
        "",
        "## Image sizes",
        "",
        f"width {frame['width'].min()}-{frame['width'].max()} px, "
        f"height {frame['height'].min()}-{frame['height'].max()} px, "
        f"channels {sorted(frame['channels'].unique().tolist())}",
        "",
        "![sizes](image_sizes.png)",
        "",
        "## Samples (masks outlined in red)",
        "",
        "![samples](samples.png)",
        "",
    ]
    lines += _training_lines(frame)
    if len(notes):
        lines += ["## Converted on reading", ""]
        lines += [f"- `{r.path}`: {r.notes}" for r in notes.itertuples()] + [""]
    lines += ["## Rejected files", ""]
    lines += [f"- `{r['path']}`: {r['reason']}" for r in rejected] or ["none"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    counts = {
        f"n_{split}": int((frame["split"] == split).sum()) for split in ("train", "val", "test")
    }
    counts["n_rejected"] = len(rejected)
    counts["n_test_abnormal"] = int(((frame["split"] == "test") & (frame["label"] == 1)).sum())
    counts["n_train_labelled"] = int(((frame["split"] == "train") & (frame["label"] == 1)).sum())
    if "planted" in frame:
        counts["n_planted"] = int(frame["planted"].astype(bool).sum())
    return counts


def _training_lines(frame: pd.DataFrame) -> list[str]:
    """What training learns from: labelled defects, planted ones, where suspects are listed."""
    labelled = frame[(frame["split"] == "train") & (frame["label"] == 1)]
    lines = ["## What training learns from", ""]
    if len(labelled):
        masked = int(labelled["mask_path"].astype(bool).sum())
        types = ", ".join(f"{k} {v}" for k, v in labelled["defect_type"].value_counts().items())
        lines.append(
            f"{len(labelled)} labelled defect(s) ({types}); {masked} with a mask (taught per "
            f"pixel), {len(labelled) - masked} by image label only. The defect head learns from "
            "them; the generator never sees them, and they never count in test metrics."
        )
    else:
        lines.append("The normals only (no labelled defects).")
    planted = frame[frame["planted"].astype(bool)] if "planted" in frame else frame.iloc[:0]
    if len(planted):
        lines.append(
            f"\n{len(planted)} defective image(s) planted among the training normals "
            "(data.contamination, for measuring): the manifest's `planted` column."
        )
    lines += [
        "",
        "After evaluate, `../evaluate/suspects.csv` lists every training and validation "
        "normal by its anomaly score, highest first: defective parts hiding in the good "
        "folder are at the top.",
        "",
    ]
    return lines
