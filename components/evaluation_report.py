"""The evaluation report: confusion matrix, metrics, curves and score histograms.

    evaluation_report.write(metrics_json, auroc_per_type, threshold_how, test_scores, out_dir)

Writes ``report.md``, ``roc.png``, ``pr.png`` and ``score_histogram.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(test["score"], bins=40)
    for defect in sorted(set(test["defect_type"]), key=lambda d: (d != "good", d)):
        ax.hist(test["score"][test["defect_type"] == defect], bins=bins, alpha=0.5, label=defect)
    ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set(xlabel="anomaly score (validation-normal std units)", ylabel="images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "score_histogram.png", dpi=100)
    plt.close(fig)


def _confusion_table(cm: dict) -> list[str]:
    return [
        "| ground truth \\ prediction | normal | anomaly |", "|---|---|---|",
        f"| normal | {cm['tn']} | {cm['fp']} |", f"| anomaly | {cm['fn']} | {cm['tp']} |",
    ]


def write(result: dict, per_type: dict, how: str, test: dict, out: Path) -> None:
    """Writes the report and its figures into ``out``."""
    _curves(test, out)
    _histogram(test, result["threshold"], out)
    lines = [
        "# Evaluation report", "",
        f"Test split: {result['n_test_normal']} normal, {result['n_test_abnormal']} defective "
        f"images. Threshold {result['threshold']:.3f} ({how}).", "",
        "## Confusion matrix at the threshold", "", *_confusion_table(result["confusion_matrix"]),
        "", "## Metrics", "", "| metric | value |", "|---|---|",
    ]
    for key in ("precision", "recall", "f1", "image_auroc", "image_ap", "pixel_auroc", "aupro"):
        lines.append(f"| {key} | {_fmt(result.get(key))} |")
    lines += [
        f"| f1_oracle (best F1 on test itself; not a deployable figure) | "
        f"{_fmt(result.get('f1_oracle'))} |", "",
        "## Image AUROC per defect type", "", "| defect type | AUROC |", "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in per_type.items()], "",
        "![ROC](roc.png) ![PR](pr.png)", "", "![scores](score_histogram.png)", "",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
