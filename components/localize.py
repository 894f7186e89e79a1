"""Defect localization on the test split: regions in original image coordinates, overlays.

    threshold = localize.map_threshold(val["anomaly_map"][val["label"] == 0], 0.999, roi)
    regions = localize.localize(test, threshold, config.evaluate)
    localize.save_overlays(test, regions, threshold, out, paths)

Maps come out of the model at its input size; each is brought back onto its original
image through the inverse of the preprocessing geometry (``resize``: squash, letterbox or
center_crop), so region boxes and areas are in original pixels. Pixels the model never saw
(outside a center crop, or letterbox padding) are NaN and never part of a region.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from components import evaluation_metrics as metrics
from components import overlay
from components.image_files import load_image, oriented_size
from models.preprocessing import content_box
from models.regions import Region, find_regions, upsample_map

REGION_COLUMNS = [
    "path",
    "defect_type",
    "label",
    "region",
    "y0",
    "x0",
    "y1",
    "x1",
    "area",
    "peak",
    "mean",
]


def map_threshold(val_normal_maps: np.ndarray, quantile: float, roi=None) -> float:
    """Pixel threshold: a quantile of the validation normals' map values inside the ROI.

    Args:
        val_normal_maps: ``[N, s, s]`` anomaly maps of validation normals.
        quantile: in ``[0, 1]``, e.g. 0.999 (about 1 normal pixel in 1000 above it).
        roi: optional ``[N, s, s]`` or ``[s, s]`` 0/1 region of interest; pixels outside
            it are left out, as the model's output there is meaningless.

    Returns:
        ``numpy.quantile`` (linear interpolation) of the considered pixels.

    Raises:
        ValueError: without any pixel, with non-finite values or a quantile outside [0, 1].

    """
    maps = np.asarray(val_normal_maps, dtype=np.float64)
    if roi is not None:
        maps = maps[np.broadcast_to(np.asarray(roi).astype(bool), maps.shape)]
    return metrics.quantile_threshold(maps, quantile)


def image_size(path) -> tuple[int, int]:
    """``(H, W)`` of an image after EXIF orientation, from its header only (no decoding)."""
    with Image.open(path) as img:
        width, height = oriented_size(img)
    return height, width


def _content_box(size: tuple[int, int], s: int, resize: str) -> tuple[tuple, tuple]:
    """``preprocessing.content_box`` for an ``(H, W)`` image, as Python ints."""
    boxes = content_box(size[0], size[1], s, resize)
    return tuple(tuple(int(v) for v in box) for box in boxes)


def region_rules(min_area: int, max_area: int, min_mean: float) -> dict:
    """``find_regions``' keyword rules from the config's values (0 means no limit).

    The evaluate stage and ``ganomaly predict`` (from the export's model card) both call
    this, so a served model boxes the same regions as the report.
    """
    return {"min_area": min_area, "max_area": max_area or None, "min_mean": min_mean or None}


def full_size(amap: np.ndarray, size: tuple[int, int], resize: str = "squash", nearest=False):
    """A model-space map (or ROI, with ``nearest``) on the original ``(H, W)`` image grid.

    Args:
        amap: ``[s, s]`` map in model space (``[h, w]`` with tiles, always squashed).
        size: ``(H, W)`` of the original image.
        resize: the preprocess ``resize`` mode the map went through.
        nearest: nearest-neighbour instead of bilinear (for 0/1 masks).

    Returns:
        float64 ``[H, W]``; NaN where the model saw no image content.

    """
    if resize == "squash":  # the whole map is the whole image, square or not
        (mt, ml, mb, mr), (it, il, ib, ir) = (0, 0, *amap.shape), (0, 0, *size)
    else:
        (mt, ml, mb, mr), (it, il, ib, ir) = _content_box(size, amap.shape[0], resize)
    content = np.asarray(amap, dtype=np.float64)[mt:mb, ml:mr]
    out = np.full(size, np.nan)
    box = (ib - it, ir - il)
    out[it:ib, il:ir] = _nearest(content, box) if nearest else upsample_map(content, box)
    return out


def _nearest(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with the pixel-centre convention of ``upsample_map``."""
    rows = ((np.arange(size[0]) + 0.5) * amap.shape[0] / size[0]).astype(int)
    cols = ((np.arange(size[1]) + 0.5) * amap.shape[1] / size[1]).astype(int)
    return amap[np.ix_(rows, cols)]


def _image_regions(test: dict, i: int, threshold: float, rules: dict, resize: str):
    """The regions of test image ``i`` in original coordinates."""
    size = image_size(test["path"][i])
    amap = full_size(test["anomaly_map"][i], size, resize)
    roi = full_size(test["roi"][i], size, resize, nearest=True) > 0.5  # NaN -> outside
    return find_regions(amap, threshold, roi=roi, **rules)


def localize(test: dict, threshold: float, evaluate_config, *, resize: str = "squash"):
    """Find the defect regions of every test image, in original image pixels.

    Args:
        test: the evaluate stage's test arrays (``anomaly_map``, ``roi``, ``path``,
            ``defect_type``, ``label``).
        threshold: pixel threshold, e.g. from ``map_threshold``.
        evaluate_config: ``EvaluateConfig``; its region rules are in original pixels.
        resize: the preprocess ``resize`` mode, to undo its geometry.

    Returns:
        One row per region (``REGION_COLUMNS``), sorted by path then descending peak;
        ``region`` numbers the regions of an image from 0 in that order. Images without a
        region have no row.

    """
    rules = region_rules(
        evaluate_config.min_region_area,
        evaluate_config.max_region_area,
        evaluate_config.min_region_mean,
    )
    rows = []
    for i, path in enumerate(test["path"]):
        for k, r in enumerate(_image_regions(test, i, threshold, rules, resize)):
            meta = (str(path), str(test["defect_type"][i]), int(test["label"][i]), k)
            rows.append((*meta, r.y0, r.x0, r.y1, r.x1, r.area, r.peak, r.mean))
    frame = pd.DataFrame(rows, columns=REGION_COLUMNS)
    frame = frame.sort_values(["path", "peak"], ascending=[True, False], kind="stable")
    return frame.reset_index(drop=True)


def save_overlays(
    test: dict,
    regions_frame: pd.DataFrame,
    threshold: float,
    out_dir,
    paths,
    mask_paths: dict[str, str] | None = None,
    *,
    resize: str = "squash",
) -> list[Path]:
    """Save an overlay PNG for each of ``paths`` into ``out_dir/overlays/``.

    Args:
        test: the evaluate stage's test arrays.
        regions_frame: the output of ``localize`` (its boxes are drawn, not recomputed).
        threshold: the pixel threshold (colour scale of the heatmaps).
        out_dir: the stage output folder.
        paths: image paths, each one of ``test["path"]``.
        mask_paths: optional image path -> ground-truth mask path (empty/NaN: none).
        resize: the preprocess ``resize`` mode, to undo its geometry.

    Returns:
        The written files, in the order of ``paths``; names are unique even when images
        of different defect types share a file name.

    """
    folder = Path(out_dir) / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    index = {str(p): i for i, p in enumerate(test["path"])}
    by_path = dict(tuple(regions_frame.groupby("path"))) if len(regions_frame) else {}
    written = []
    for path in paths:
        i = index[str(path)]
        image = load_image(Path(path), 3)
        amap = full_size(test["anomaly_map"][i], image.shape[:2], resize)
        picture = overlay.draw(
            image,
            amap,
            _regions_of(by_path.get(str(path))),
            _gt_mask(mask_paths, path, image.shape[:2]),
            threshold,
            f"{Path(path).name}  [{test['defect_type'][i]}]  score {float(test['score'][i]):.2f}",
        )
        target = folder / _overlay_name(i, test["defect_type"][i], path)
        picture.save(target, compress_level=1)
        written.append(target)
    return written


def _regions_of(rows: pd.DataFrame | None) -> list[Region]:
    if rows is None:
        return []
    fields = ["y0", "x0", "y1", "x1", "area", "peak", "mean"]
    return [Region(*values) for values in rows[fields].itertuples(index=False)]


def _gt_mask(mask_paths, path, size) -> np.ndarray | None:
    """The original-size ground truth of ``path``, or None (none, or a size mismatch)."""
    mask_path = (mask_paths or {}).get(str(path))
    if not isinstance(mask_path, str) or not mask_path:
        return None  # normals have no mask; pandas gives NaN for an empty cell
    mask = load_image(Path(mask_path), 1)[..., 0] > 127
    return mask if mask.shape == tuple(size) else None


def _overlay_name(i: int, defect_type: str, path) -> str:
    """``0007_crack_000.png``: the test index keeps equal file names apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{defect_type}_{Path(path).stem}")
    return f"{i:04d}_{safe}.png"
