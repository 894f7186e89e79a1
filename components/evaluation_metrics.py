"""Evaluation metrics for anomaly detection: image-level and pixel-level.

Conventions used throughout:

* ``labels`` / ``masks`` are truthy for anomalous (positive) samples or pixels.
* A higher score means "more anomalous"; the decision rule is ``score >= threshold``.
* Metrics that are undefined for the given data return ``None`` instead of ``nan`` so
  callers (and the tracking layer) can tell "not computable" from a real number.

Pixel metrics work on whole stacks (``[N, H, W]``) at once and are exact: curves are built
from a single sort of all scores, with tied scores merged into one operating point, so
there is no fixed threshold grid to tune. On a ``200 x 256 x 256`` stack AUPRO takes about
2 s and pixel AUROC about 1 s on one CPU core.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity inside each image, none across images of a [N, H, W] stack.
_STACK_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_STACK_8_CONNECTIVITY[1] = True


def image_auroc(labels, scores) -> float | None:
    """Area under the ROC curve of image scores.

    Args:
        labels: ``[N]`` ground truth, 1/True for anomalous images.
        scores: ``[N]`` anomaly scores, higher is more anomalous.

    Returns:
        The AUROC (tied scores count as half-correct), or ``None`` when only one class
        is present.

    """
    labels, scores = _check_image_inputs(labels, scores)
    return _auroc(labels, scores)


def image_ap(labels, scores) -> float | None:
    """Average precision (area under the step-wise precision-recall curve).

    Computed like ``sklearn.metrics.average_precision_score``:
    ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds.

    Args:
        labels: ``[N]`` ground truth, 1/True for anomalous images.
        scores: ``[N]`` anomaly scores, higher is more anomalous.

    Returns:
        The AP, or ``None`` when only one class is present (with no negatives AP is
        trivially 1, which says nothing about the model).

    """
    labels, scores = _check_image_inputs(labels, scores)
    if labels.all() or not labels.any():
        return None
    tp, fp, _ = _tied_cumsums(scores, labels.astype(np.float64), (~labels).astype(np.float64))
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def best_f1_threshold(labels, scores) -> tuple[float, float]:
    """Threshold that maximises F1 when predicting ``score >= threshold``.

    Only the observed scores are candidates, so the returned threshold is always one of
    ``scores`` (no midpoints). On equal F1 the highest threshold wins (fewest alarms).

    Args:
        labels: ``[N]`` ground truth, 1/True for anomalous images.
        scores: ``[N]`` anomaly scores, higher is more anomalous.

    Returns:
        ``(threshold, f1)``. Without any positive label F1 is 0 everywhere and the
        threshold is the maximum score.

    """
    labels, scores = _check_image_inputs(labels, scores)
    tp, fp, thresholds = _tied_cumsums(
        scores, labels.astype(np.float64), (~labels).astype(np.float64)
    )
    n_pos = float(labels.sum())
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P); the denominator is > 0 here
    # because every candidate threshold predicts at least one positive.
    f1 = 2.0 * tp / (tp + fp + n_pos)
    best = int(np.argmax(f1))  # first maximum = highest threshold, as thresholds descend
    return float(thresholds[best]), float(f1[best])


def quantile_threshold(normal_scores, quantile: float) -> float:
    """Threshold at a quantile of scores of normal (defect-free) samples.

    Args:
        normal_scores: scores of normal samples, e.g. the validation split.
        quantile: in ``[0, 1]``; 0.99 flags roughly 1% of normal samples.

    Returns:
        ``numpy.quantile`` with linear interpolation between order statistics.

    Raises:
        ValueError: if there are no scores, a score is not finite, or ``quantile`` is
            outside ``[0, 1]``.

    """
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("quantile_threshold needs at least one normal score")
    if not np.isfinite(scores).all():
        raise ValueError("normal scores must be finite")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    return float(np.quantile(scores, quantile))


def classification_report(labels, scores, threshold) -> dict:
    """Confusion matrix and F1 / precision / recall for ``score >= threshold``.

    Args:
        labels: ``[N]`` ground truth, 1/True for anomalous images.
        scores: ``[N]`` anomaly scores.
        threshold: decision threshold; a score equal to it is predicted anomalous.

    Returns:
        ``{"f1", "precision", "recall", "confusion_matrix": {"tn", "fp", "fn", "tp"}}``
        with plain Python numbers; a ratio with a zero denominator is ``0.0``.

    """
    labels, scores = _check_image_inputs(labels, scores)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def pixel_auroc(masks, maps, roi=None) -> float | None:
    """Pixel-wise AUROC over all pixels of all images.

    Args:
        masks: ``[N, H, W]`` (or ``[H, W]``) ground truth, True for defect pixels.
        maps: anomaly maps of the same shape.
        roi: optional bool ``[N, H, W]`` or ``[H, W]``; pixels outside it are ignored.

    Returns:
        The AUROC, or ``None`` if the considered pixels hold only one class.

    """
    masks, maps, roi = _check_pixel_inputs(masks, maps, roi)
    return _auroc(masks[roi], maps[roi])


def aupro(masks, maps, fpr_limit: float = 0.3, roi=None) -> float | None:
    """Normalised area under the per-region-overlap curve (MVTec AD definition).

    For each threshold ``t`` (every distinct map value, predicting ``map >= t``):
    PRO is the mean, over all ground-truth connected components (8-connectivity, all
    images), of the fraction of the component's pixels predicted anomalous; FPR is the
    fraction of normal pixels predicted anomalous. PRO is integrated over FPR in
    ``[0, fpr_limit]`` with the trapezoid rule, interpolating the curve at exactly
    ``fpr_limit``, and divided by ``fpr_limit`` so that a perfect map scores 1.0 and a
    constant map scores ``fpr_limit / 2``.

    Components are labelled on the full masks; with a ``roi`` their pixels outside it are
    ignored (a component cut by the roi stays one component), components lying wholly
    outside it are dropped, and only normal pixels inside it count for the FPR.

    Args:
        masks: ``[N, H, W]`` (or ``[H, W]``) ground truth, True for defect pixels.
        maps: anomaly maps of the same shape.
        fpr_limit: upper integration bound, in ``(0, 1]``.
        roi: optional bool ``[N, H, W]`` or ``[H, W]``.

    Returns:
        The normalised AUPRO, or ``None`` without any ground-truth region or without any
        normal pixel (FPR undefined).

    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps, roi = _check_pixel_inputs(masks, maps, roi)
    fpr, pro = _pro_curve(masks, maps, roi)
    if fpr is None:
        return None
    return _partial_area(fpr, pro, fpr_limit) / fpr_limit


def _pro_curve(masks, maps, roi):
    """Exact (FPR, PRO) curve starting at (0, 0), or ``(None, None)`` when undefined."""
    components, _ = ndimage.label(masks, structure=_STACK_8_CONNECTIVITY)
    components = components[roi]
    sizes = np.bincount(components, minlength=1)
    sizes[0] = 0  # label 0 is the background, not a region
    n_regions = int(np.count_nonzero(sizes))
    n_normal = int(np.count_nonzero(components == 0))
    if n_regions == 0 or n_normal == 0:
        return None, None
    # PRO(t) = sum over defect pixels above t of 1 / (n_regions * |its component|), so
    # each region weighs the same whatever its size: a cumulative sum after one sort.
    with np.errstate(divide="ignore"):
        region_weight = np.where(sizes > 0, 1.0 / (n_regions * sizes), 0.0)
    pro_weight = region_weight[components]
    fpr_weight = (components == 0) / float(n_normal)
    pro, fpr, _ = _tied_cumsums(maps[roi], pro_weight, fpr_weight)
    # Cumulative sums can overshoot 1 by rounding; the exact curve ends at (1, 1).
    fpr = np.concatenate(([0.0], np.minimum(fpr, 1.0)))
    pro = np.concatenate(([0.0], np.minimum(pro, 1.0)))
    return fpr, pro


def _partial_area(x, y, x_max: float) -> float:
    """Trapezoid area under a curve with non-decreasing ``x`` over ``[x[0], x_max]``."""
    inside = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    area = _trapezoid(x[:inside], y[:inside])
    if inside < x.size and x[inside - 1] < x_max:
        # Close the area with the segment that crosses x_max, cut at exactly x_max.
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_cut = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_cut) * (x_max - x0)
    return area


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact AUROC; trapezoids over tie groups give ties half credit like sklearn."""
    if labels.all() or not labels.any():
        return None
    # Own sort-based version: sklearn's roc_auc_score takes ~5 s on 13M pixels.
    tp, fp, _ = _tied_cumsums(scores, labels.astype(np.float64), (~labels).astype(np.float64))
    tpr = np.concatenate(([0.0], tp / tp[-1]))
    fpr = np.concatenate(([0.0], fp / fp[-1]))
    return _trapezoid(fpr, tpr)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid-rule integral of ``y`` over ``x`` (``np.trapezoid`` needs numpy 2)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _tied_cumsums(scores, weights_a, weights_b):
    """Cumulative weights of samples with ``score >= t`` for each distinct score ``t``.

    Args:
        scores: ``[M]`` finite scores.
        weights_a: ``[M]`` per-sample weights of the first sum.
        weights_b: ``[M]`` per-sample weights of the second sum.

    Returns:
        ``(sum_a, sum_b, thresholds)``, thresholds distinct and descending.

    """
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    # Only the last sample of a run of equal scores is an operating point: a threshold
    # cannot separate tied samples.
    group_end = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    sum_a = np.cumsum(weights_a[order])[group_end]
    sum_b = np.cumsum(weights_b[order])[group_end]
    return sum_a, sum_b, sorted_scores[group_end]


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (never nan)."""
    return numerator / denominator if denominator else 0.0


def _check_image_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``[N]`` labels (0/1 or bool) and finite scores; return (bool, float)."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise ValueError("no samples to evaluate")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1 or boolean")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return labels.astype(bool), scores


def _check_pixel_inputs(masks, maps, roi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``[N, H, W]`` bool masks, float maps and a bool roi of the same shape."""
    masks = _as_stack(np.asarray(masks).astype(bool))
    maps = _as_stack(np.asarray(maps))
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps must be finite")
    if roi is None:
        roi = np.ones(masks.shape, dtype=bool)
    else:
        roi = np.asarray(roi).astype(bool)
        if roi.shape not in (masks.shape, masks.shape[1:]):
            raise ValueError(f"roi {roi.shape} fits neither {masks.shape} nor its images")
        roi = np.broadcast_to(roi, masks.shape)
    return masks, maps, roi


def _as_stack(array: np.ndarray) -> np.ndarray:
    """View a single ``[H, W]`` image as a stack of one; require ``[N, H, W]``."""
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"expected [N, H, W] or [H, W] arrays, got shape {array.shape}")
    return array
