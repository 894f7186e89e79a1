"""Hand-computed cases for components.evaluation_metrics; the numbers are derived in comments."""

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from components import evaluation_metrics as metrics


def test_image_auroc_perfect_reversed_and_mixed():
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.image_auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    # Pairs (pos, neg): (0.6,0.1) ok, (0.6,0.7) wrong, (0.9,0.1) ok, (0.9,0.7) ok -> 3/4.
    assert metrics.image_auroc([1, 0, 1, 0], [0.6, 0.1, 0.9, 0.7]) == pytest.approx(0.75)


def test_image_auroc_ties_count_half_and_match_sklearn():
    # One pos/neg pair tied -> 0.5.
    assert metrics.image_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 1)  # many ties
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_image_metrics_none_with_one_class():
    assert metrics.image_auroc([1, 1], [0.1, 0.2]) is None
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None
    assert metrics.image_ap([1, 1], [0.1, 0.2]) is None
    assert metrics.image_ap([0, 0], [0.1, 0.2]) is None


def test_image_ap_by_hand():
    # Descending: 0.9 pos (P=1, R=1/2), 0.8 neg, 0.7 pos (P=2/3, R=1), 0.1 neg.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert metrics.image_ap([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200), 1)
    expected = average_precision_score(labels, scores)
    assert metrics.image_ap(labels, scores) == pytest.approx(expected)


def test_best_f1_threshold_by_hand():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]
    # P = 3, F1 = 2TP / (TP + FP + P) for score >= t:
    # t=0.9: 2/4  t=0.8: 4/5  t=0.7: 4/6  t=0.4: 4/7  t=0.35: 6/8  t=0.1: 6/9.
    threshold, f1 = metrics.best_f1_threshold(labels, scores)
    assert threshold == 0.8
    assert f1 == pytest.approx(0.8)


def test_best_f1_threshold_ties_and_no_positive():
    # Tied scores are one operating point. P = 2:
    # t=0.9: 2/3, t=0.5 (a pos and a neg): 4/5, t=0.1: 4/6 -> (0.5, 0.8).
    assert metrics.best_f1_threshold([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == (0.5, 0.8)
    # Equal F1 (t=0.9: 2/3, t=0.6: 4/6): the highest threshold wins.
    threshold, f1 = metrics.best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6])
    assert (threshold, f1) == (0.9, pytest.approx(2 / 3))
    # No positive: F1 is 0 everywhere, the threshold is the maximum score.
    assert metrics.best_f1_threshold([0, 0], [0.3, 0.2]) == (0.3, 0.0)


def test_quantile_threshold():
    # Linear interpolation: 0..100, the 0.99 quantile is 99, the median of 1..4 is 2.5.
    assert metrics.quantile_threshold(np.arange(101), 0.99) == pytest.approx(99.0)
    assert metrics.quantile_threshold([4, 1, 3, 2], 0.5) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        metrics.quantile_threshold([1.0], 1.5)
    with pytest.raises(ValueError):
        metrics.quantile_threshold([], 0.5)


def test_classification_report_counts():
    labels = [1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.5, 0.2, 0.5, 0.1, 0.3, 0.05]
    # score >= 0.5: predicted [1, 1, 0, 1, 0, 0, 0] -> tp 2, fn 1, fp 1, tn 3.
    report = metrics.classification_report(labels, scores, 0.5)
    assert report["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 2}
    assert all(type(v) is int for v in report["confusion_matrix"].values())
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)


def test_classification_report_undefined_ratios_are_zero():
    report = metrics.classification_report([0, 0], [0.1, 0.2], 0.5)
    assert report["confusion_matrix"] == {"tn": 2, "fp": 0, "fn": 0, "tp": 0}
    assert (report["precision"], report["recall"], report["f1"]) == (0.0, 0.0, 0.0)


def test_pixel_auroc_roi_excludes_pixels():
    masks = np.array([[[True, False], [False, False]]])
    maps = np.array([[[0.5, 0.9], [0.1, 0.2]]])
    # Defect 0.5 beats 0.1 and 0.2 but not 0.9 -> 2/3.
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(2 / 3)
    # Without the 0.9 pixel it beats every normal pixel -> 1.
    roi = np.array([[True, False], [True, True]])  # [H, W] roi, broadcast over images
    assert metrics.pixel_auroc(masks, maps, roi=roi) == pytest.approx(1.0)
    assert metrics.pixel_auroc(np.zeros((1, 2, 2), bool), maps) is None


def _two_region_case(small_value):
    """10x10 image: a 3x3 region scored 0.9, a 1-pixel region, 9 normal pixels at 0.6."""
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:3, 0:3] = True  # big region, 9 px
    mask[7, 7] = True  # small region, 1 px -> 90 normal pixels
    amap = np.zeros((10, 10))
    amap[0:3, 0:3] = 0.9
    amap[7, 7] = small_value
    amap[9, 0:9] = 0.6  # 9 normal pixels -> FPR 9/90 = 0.1 at t = 0.6
    return mask[None], amap[None]


def test_aupro_perfect_and_constant_maps():
    mask, _ = _two_region_case(0.5)
    # Perfect: curve (0,0) -> (0,1) -> (1,1), area over [0, 0.3] is 0.3 -> 1.0.
    assert metrics.aupro(mask, mask.astype(float)) == pytest.approx(1.0)
    # Constant: one threshold, (0,0) -> (1,1); area to L is L^2/2 -> normalised L/2.
    assert metrics.aupro(mask, np.full(mask.shape, 0.3)) == pytest.approx(0.15)
    assert metrics.aupro(mask, np.full(mask.shape, 0.3), fpr_limit=0.5) == pytest.approx(0.25)


def test_aupro_averages_per_region_not_per_pixel():
    mask, amap = _two_region_case(small_value=0.5)
    # t=0.9: FPR 0, PRO (1 + 0)/2 = 0.5 (big found, small not); t=0.6: FPR 0.1, PRO 0.5;
    # t=0.5: FPR 0.1, PRO 1; t=0: (1, 1). Area to 0.3: 0.1*0.5 + 0.2*1 = 0.25 -> 0.25/0.3.
    # (Pooling pixels instead would give PRO 9/10 at t=0.9 and 0.29/0.3.)
    assert metrics.aupro(mask, amap) == pytest.approx(0.25 / 0.3)
    # Limit inside the first flat part: area 0.05*0.5 -> 0.5.
    assert metrics.aupro(mask, amap, fpr_limit=0.05) == pytest.approx(0.5)


def test_aupro_interpolates_at_fpr_limit():
    mask, amap = _two_region_case(small_value=0.0)  # small region tied with 81 normals
    # Points: (0,0), (0,0.5), (0.1,0.5), (1,1). At 0.3 the last segment gives
    # PRO 0.5 + 0.5 * 0.2/0.9 = 11/18; area 0.1*0.5 + 0.2*(0.5 + 11/18)/2 = 0.16111...
    expected = (0.05 + 0.1 * (0.5 + 11 / 18)) / 0.3  # = 29/54
    assert metrics.aupro(mask, amap) == pytest.approx(expected)
    assert expected == pytest.approx(29 / 54)


def test_aupro_none_without_regions():
    assert metrics.aupro(np.zeros((2, 4, 4), bool), np.random.rand(2, 4, 4)) is None


def test_aupro_components_use_8_connectivity():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 1, 2] = True  # diagonal touch: one 3-px region
    amap = np.zeros((1, 4, 4))
    amap[0, 0, 0] = 1.0
    # 8-connected: PRO 1/3 at FPR 0, then (1, 1); at 0.3 PRO = 1/3 + 2/3 * 0.3.
    # Area 0.3 * (1/3 + 1/3 + 0.2) / 2 -> normalised 0.4333. (4-connectivity: two regions,
    # PRO 1/2 at FPR 0 -> 0.575.)
    assert metrics.aupro(mask, amap) == pytest.approx((2 / 3 + 0.2) / 2)


def _brute_force_aupro(masks, maps, fpr_limit, roi):
    """Loop over every distinct value; the definition written out with no shortcuts."""
    components, n = ndimage.label(masks, structure=metrics._STACK_8_CONNECTIVITY)
    normal = ~masks & roi
    regions = [(components == k) & roi for k in range(1, n + 1)]
    regions = [r for r in regions if r.any()]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps[roi])[::-1]:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([(above & r).sum() / r.sum() for r in regions]))
    x, y = np.array(fprs), np.array(pros)
    j = np.argmax(x >= fpr_limit)  # first point at or past the limit (x ends at 1)
    y_cut = y[j - 1] + (y[j] - y[j - 1]) * (fpr_limit - x[j - 1]) / (x[j] - x[j - 1])
    x = np.append(x[:j], fpr_limit)
    y = np.append(y[:j], y_cut)
    return np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(seed, fpr_limit):
    rng = np.random.default_rng(seed)
    masks = ndimage.binary_dilation(rng.random((3, 12, 12)) < 0.04, iterations=1)
    masks[0] = False  # a normal image only contributes to the FPR
    maps = np.round(masks * 0.3 + rng.random(masks.shape), 2)  # rounding creates ties
    roi = rng.random((12, 12)) < 0.8
    roi = np.broadcast_to(roi, masks.shape) if seed % 2 else np.ones(masks.shape, bool)
    expected = _brute_force_aupro(masks, maps, fpr_limit, roi)
    assert metrics.aupro(masks, maps, fpr_limit, roi=roi) == pytest.approx(expected, abs=1e-9)


def test_pixel_metrics_are_fast_on_a_realistic_stack():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 256, 256), dtype=bool)  # half the 200-image target, for CI time
    masks[::2, 100:140, 60:90] = True
    maps = rng.random(masks.shape, dtype=np.float32) + masks
    start = time.perf_counter()
    assert metrics.aupro(masks, maps) == pytest.approx(1.0)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(1.0)
    assert time.perf_counter() - start < 10.0
