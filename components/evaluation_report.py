"""The evaluation report: what an inspection engineer reads after a run.

    evaluation_report.write(result, per_type, how, test, out, regions,
                            gallery_size=8, mask_paths=mask_paths, resize="squash")

Writes into ``out``: ``report.md``, ``roc.png``, ``pr.png``, ``score_histogram.png``,
``regions.csv`` and the gallery overlays ``overlays/*.png``. The report holds the
confusion matrix, precision/recall/F1, image AUROC and AP overall and per defect type,
the curves, score histograms per defect type against the normals, a summary of the
localized regions, galleries of the worst false positives and false negatives, and the
highest-scoring training and validation normals (the suspects).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from components import evaluation_metrics as metrics  # noqa: E402
from components.localize import save_overlays  # noqa: E402

NORMAL = "good"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _defect_types(test: dict) -> list[str]:
    return sorted(set(test["defect_type"][test["label"] == 1].tolist()))


def _curves(test: dict, out: Path) -> None:
    labels, scores = test["label"], test["score"]
    if len(set(labels.tolist())) < 2:
        return
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    for name, x, y, xlabel, ylabel in (
        ("roc", fpr, tpr, "false positive rate", "true positive rate"),
        ("pr", recall, precision, "recall", "precision"),
    ):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(x, y)
        if name == "roc":
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name.upper(), xlim=(0, 1), ylim=(0, 1.02))
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)


def _histogram(test: dict, threshold: float, out: Path) -> None:
    """One small panel per defect type against the normals, on shared bins and axes."""
    types = _defect_types(test) or [None]
    cols = min(3, len(types))
    rows = -(-len(types) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    # Shared bins keep the panels comparable; the threshold must be inside the range.
    edges = np.histogram_bin_edges(np.append(test["score"], threshold), bins=40)
    normal = test["score"][test["label"] == 0]
    for ax, defect in zip(axes.flat, types):
        ax.hist(normal, bins=edges, alpha=0.5, color="tab:blue", label="normal")
        if defect is not None:
            scores = test["score"][(test["label"] == 1) & (test["defect_type"] == defect)]
            ax.hist(scores, bins=edges, alpha=0.5, color="tab:red", label=defect)
        ax.axvline(threshold, color="black", linestyle="--", label="threshold")
        ax.set_title(defect or "normal only", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(types) :]:
        ax.set_axis_off()
    fig.supxlabel("anomaly score (validation-normal std units)", fontsize=9)
    fig.supylabel("images", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "score_histogram.png", dpi=100)
    plt.close(fig)


def _confusion_table(cm: dict) -> list[str]:
    return [
        "| ground truth \\ prediction | normal | anomaly |",
        "|---|---|---|",
        f"| normal | {cm['tn']} | {cm['fp']} |",
        f"| anomaly | {cm['fn']} | {cm['tp']} |",
    ]


def _metrics_table(result: dict) -> list[str]:
    lines = ["| metric | value |", "|---|---|"]
    for key in ("precision", "recall", "f1", "image_auroc", "image_ap", "pixel_auroc", "aupro"):
        lines.append(f"| {key} | {_fmt(result.get(key))} |")
    lines.append(
        "| f1_oracle (best F1 on test itself; not a deployable figure) | "
        f"{_fmt(result.get('f1_oracle'))} |"
    )
    return lines


def _per_type_table(
    test: dict, per_type: dict, threshold: float, pixel_per_type: dict
) -> list[str]:
    """AUROC and AP of each defect type against all test normals, its hit rate, pixel AUROC."""
    labels, scores, types = test["label"], test["score"], test["defect_type"]
    flagged = scores >= threshold
    normals = labels == 0
    lines = [
        "| defect type | images | flagged at threshold | AUROC | AP | pixel AUROC |",
        "|---|---|---|---|---|---|",
        f"| {NORMAL} (false alarms) | {int(normals.sum())} | {int(flagged[normals].sum())} | | | |",
    ]
    for defect in _defect_types(test):
        this = (labels == 1) & (types == defect)
        keep = normals | this
        ap = metrics.image_ap(labels[keep], scores[keep])
        aurocs = f"{_fmt(per_type.get(defect))} | {_fmt(ap)} | {_fmt(pixel_per_type.get(defect))}"
        lines.append(f"| {defect} | {int(this.sum())} | {int(flagged[this].sum())} | {aurocs} |")
    return lines


def _regions_table(test: dict, regions: pd.DataFrame) -> list[str]:
    """Per group of images: how many have at least one region, and how many regions."""
    per_image = regions.groupby("path").size() if len(regions) else pd.Series(dtype=int)
    counts = np.array([int(per_image.get(str(p), 0)) for p in test["path"]])
    groups = [(f"{NORMAL} (normal)", test["label"] == 0), ("all defects", test["label"] == 1)]
    groups += [(d, test["defect_type"] == d) for d in _defect_types(test)]
    lines = [
        "| images | count | with >= 1 region | share | regions |",
        "|---|---|---|---|---|",
    ]
    for name, keep in groups:
        n, hit = int(keep.sum()), int((counts[keep] > 0).sum())
        share = f"{hit / n:.0%}" if n else "n/a"
        lines.append(f"| {name} | {n} | {hit} | {share} | {int(counts[keep].sum())} |")
    return lines


def _worst(test: dict, threshold: float, size: int) -> dict[str, tuple[str, np.ndarray]]:
    """Indices of the worst false positives and false negatives, with a caption each.

    Without an error of a kind, the closest calls stand in (highest-scoring normals,
    lowest-scoring defects), so the engineer still sees where the margin is thin.
    """
    scores = test["score"]
    normals = np.flatnonzero(test["label"] == 0)
    defects = np.flatnonzero(test["label"] == 1)
    normals = normals[np.argsort(-scores[normals], kind="stable")]
    defects = defects[np.argsort(scores[defects], kind="stable")]
    fp = normals[scores[normals] >= threshold]
    fn = defects[scores[defects] < threshold]
    return {
        "Worst false positives": (
            ("normals above the threshold, highest score first", fp[:size])
            if fp.size
            else ("no false positives; the highest-scoring normals", normals[:size])
        ),
        "Worst false negatives": (
            ("defects below the threshold, lowest score first", fn[:size])
            if fn.size
            else ("no false negatives; the lowest-scoring defects", defects[:size])
        ),
    }


SUSPECTS_SHOWN = 10


def _suspects_section(suspects: pd.DataFrame | None) -> list[str]:
    """The highest-scoring training and validation normals, and where the planted ones rank.

    Args:
        suspects: ``suspects.csv``'s table (highest score first), or None.
    """
    if suspects is None:
        return []
    found, count = planted_in_top(suspects)
    extra = count > 0  # the planted column only where something was planted
    lines = [
        "## Suspects: the highest-scoring training and validation normals",
        "",
        f"All {len(suspects)} training and validation normals are scored like the test "
        "images in `suspects.csv`, highest first. A defective part filed as good is trained "
        "on as normal, yet it usually still scores high: look at the top rows, take the "
        "defective ones out of the good folder and train again.",
        "",
        "| rank | score | split | image |" + (" planted |" if extra else ""),
        "|---|---|---|---|" + ("---|" if extra else ""),
    ]
    for rank, row in enumerate(suspects.head(SUSPECTS_SHOWN).itertuples(), 1):
        cells = f"| {rank} | {row.score:.2f} | {row.split} | `{row.path}` |"
        lines.append(cells + (f" {row.planted} |" if extra else ""))
    lines.append("")
    if extra:
        lines += [
            f"{count} defective image(s) were planted among the normals "
            f"(`data.contamination`); {found} ({found / count:.0%}) are among the top "
            f"{2 * count} rows (`planted_recall_at_2k`).",
            "",
        ]
    return lines


def planted_in_top(suspects: pd.DataFrame) -> tuple[int, int]:
    """``(found, k)``: of the ``k`` planted defects, how many are in the top ``2k`` rows.

    Twice as many rows as were planted: what a person reads through when told
    roughly how many bad parts hide in the good folder. ``(0, 0)`` without a
    ``planted`` column or without planted rows.
    """
    if "planted" not in suspects:
        return 0, 0
    planted = suspects["planted"].fillna("").astype(bool)
    count = int(planted.sum())
    return int(planted.iloc[: 2 * count].sum()), count


def _galleries(test, regions, result, out, size, mask_paths, resize) -> list[str]:
    """Overlay PNGs of the worst errors, as markdown sections linking them."""
    if size <= 0:
        return []
    lines = []
    per_image = regions.groupby("path").size() if len(regions) else pd.Series(dtype=int)
    for title, (note, indices) in _worst(test, result["threshold"], size).items():
        lines += [f"## {title}", "", f"{note.capitalize()}.", ""]
        if not indices.size:
            lines += ["(none in the test split)", ""]
            continue
        paths = [str(test["path"][i]) for i in indices]
        files = save_overlays(
            test, regions, result.get("map_threshold"), out, paths, mask_paths, resize=resize
        )
        for i, path, file in zip(indices, paths, files):
            lines += [
                f"**{Path(path).name}** ({test['defect_type'][i]}, score "
                f"{float(test['score'][i]):.2f}, {int(per_image.get(path, 0))} regions) "
                f"`{path}`",
                "",
                f"![{Path(path).name}]({file.relative_to(out).as_posix()})",
                "",
            ]
    return lines


def write(
    result: dict,
    per_type: dict,
    how: str,
    test: dict,
    out: Path,
    regions: pd.DataFrame,
    gallery_size: int = 8,
    mask_paths: dict | None = None,
    *,
    resize: str = "squash",
    pixel_per_type: dict | None = None,
    suspects: pd.DataFrame | None = None,
) -> None:
    """Writes the report, its figures, ``regions.csv`` and the gallery overlays into ``out``.

    Args:
        result: ``metrics.json`` content; ``threshold`` is the image threshold and the
            optional ``map_threshold`` the pixel threshold (heatmap colour scale).
        per_type: image AUROC of each defect type against the test normals.
        how: how the image threshold was chosen, in words.
        test: the evaluate stage's test arrays.
        out: the stage output folder.
        regions: the output of ``components.localize.localize``.
        gallery_size: overlays per gallery.
        mask_paths: optional image path -> ground-truth mask path, for green outlines.
        resize: the preprocess ``resize`` mode, to place the maps on the images.
        pixel_per_type: pixel AUROC of each defect type (its images and the normals).
        suspects: the training and validation normals by score, highest first
            (``suspects.csv``); its top rows are listed.

    """
    out = Path(out)
    _curves(test, out)
    _histogram(test, result["threshold"], out)
    regions.to_csv(out / "regions.csv", index=False)
    map_threshold = result.get("map_threshold")
    lines = [
        "# Evaluation report",
        "",
        f"Test split: {result['n_test_normal']} normal, {result['n_test_abnormal']} defective "
        f"images. Threshold {result['threshold']:.3f} ({how}).",
        "",
        "## Confusion matrix at the threshold",
        "",
        *_confusion_table(result["confusion_matrix"]),
        "",
        "## Metrics",
        "",
        *_metrics_table(result),
        "",
        "## Per defect type (each against all test normals)",
        "",
        *_per_type_table(test, per_type, result["threshold"], pixel_per_type or {}),
        "",
        "![ROC](roc.png) ![PR](pr.png)",
        "",
        "![scores](score_histogram.png)",
        "",
        "## Localized regions",
        "",
        f"Pixel threshold {_fmt(map_threshold)}; every region is listed in `regions.csv` "
        "(boxes in original image pixels).",
        "",
        *_regions_table(test, regions),
        "",
        *_suspects_section(suspects),
        *_galleries(test, regions, result, out, gallery_size, mask_paths, resize),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
