"""Defect regions from anomaly maps: upsampling, thresholding and connected components.

A region is an 8-connected component of map pixels at or above a threshold, described
by its bounding box and the peak and mean map value over its pixels. Everything here is
plain numpy/scipy so it runs in the scoring service without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import ndimage

_8_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclasses.dataclass
class Region:
    """One connected defect region; the box is ``[y0, y1) x [x0, x1)`` in map pixels."""

    y0: int
    x0: int
    y1: int
    x1: int
    area: int  # pixels in the component, not in its box
    peak: float
    mean: float


def upsample_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a ``[h, w]`` anomaly map to exactly ``size = (H, W)``.

    Pixel centres are aligned (the half-pixel convention of ``tf.image.resize`` and
    ``cv2.resize``), so a low-resolution map stays registered with the image it scores;
    samples beyond the outer pixel centres repeat the edge values.

    Args:
        amap: ``[h, w]`` map.
        size: target ``(H, W)``, both positive.

    Returns:
        ``[H, W]`` float64 map; its values stay within ``[amap.min(), amap.max()]``.

    """
    amap = np.asarray(amap, dtype=np.float64)
    if amap.ndim != 2 or amap.size == 0:
        raise ValueError(f"expected a non-empty [h, w] map, got shape {amap.shape}")
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if (height, width) == amap.shape:  # the map is already on the image grid
        return amap.copy()
    # Bilinear is separable: blend two rows, then two columns (per-size cached indices and
    # weights). Plain numpy on one core: a BLAS product fought the model for both cores.
    rows_low, rows_high, rows_w = _interpolation(amap.shape[0], height)
    cols_low, cols_high, cols_w = _interpolation(amap.shape[1], width)
    tall = amap[rows_low] * (1.0 - rows_w)[:, None] + amap[rows_high] * rows_w[:, None]
    return tall[:, cols_low] * (1.0 - cols_w) + tall[:, cols_high] * cols_w


@functools.lru_cache(maxsize=64)  # a folder's images share a few sizes
def _interpolation(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each output pixel centre's two input neighbours and the weight of the second."""
    coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
    low = np.floor(coords).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    weight = coords - low
    for array in (low, high, weight):
        array.flags.writeable = False  # shared by every call through the cache
    return low, high, weight


def find_regions(
    amap: np.ndarray,
    threshold: float,
    min_area: int = 1,
    max_area: int | None = None,
    min_mean: float | None = None,
    roi: np.ndarray | None = None,
) -> list[Region]:
    """Find the 8-connected components of ``amap >= threshold`` inside ``roi``.

    Args:
        amap: ``[H, W]`` anomaly map; NaN pixels are never part of a region.
        threshold: pixels with a value ``>= threshold`` are candidates.
        min_area: drop regions with fewer pixels.
        max_area: if given, drop regions with more pixels (e.g. a whole-image glare).
        min_mean: if given, drop regions whose mean map value is lower.
        roi: optional bool ``[H, W]``; pixels outside it never belong to a region, so
            the roi can split a blob into several regions.

    Returns:
        The kept regions, by descending peak (ties: larger area, then top-left first).

    """
    amap = np.asarray(amap, dtype=np.float64)
    if amap.ndim != 2:
        raise ValueError(f"expected an [H, W] map, got shape {amap.shape}")
    candidates = amap >= threshold
    if roi is not None:
        roi = np.asarray(roi).astype(bool)
        if roi.shape != amap.shape:
            raise ValueError(f"roi {roi.shape} does not match map {amap.shape}")
        candidates &= roi
    labels, n_labels = ndimage.label(candidates, structure=_8_CONNECTIVITY)
    if n_labels == 0:
        return []
    regions = _describe_components(amap, labels, n_labels)
    regions = [r for r in regions if _keep(r, min_area, max_area, min_mean)]
    regions.sort(key=lambda r: (-r.peak, -r.area, r.y0, r.x0))
    return regions


def _describe_components(amap: np.ndarray, labels: np.ndarray, n_labels: int) -> list[Region]:
    """Box, area, peak and mean of each labelled component 1..n_labels."""
    areas = np.bincount(labels.ravel(), minlength=n_labels + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=amap.ravel(), minlength=n_labels + 1)[1:]
    peaks = np.full(n_labels + 1, -np.inf)  # bucket 0 (background, NaN included) is dropped
    np.maximum.at(peaks, labels.ravel(), amap.ravel())  # several times ndimage.maximum's speed
    peaks = peaks[1:]
    boxes = ndimage.find_objects(labels)
    return [
        Region(
            y0=int(rows.start),
            x0=int(cols.start),
            y1=int(rows.stop),
            x1=int(cols.stop),
            area=int(area),
            peak=float(peak),
            mean=float(total / area),
        )
        for (rows, cols), area, peak, total in zip(boxes, areas, peaks, sums)
    ]


def _keep(region: Region, min_area: int, max_area: int | None, min_mean: float | None) -> bool:
    """Whether a region passes the area and intensity filters of ``find_regions``."""
    if region.area < min_area:
        return False
    if max_area is not None and region.area > max_area:
        return False
    return min_mean is None or region.mean >= min_mean
