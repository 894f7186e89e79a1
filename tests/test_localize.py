"""components.localize on hand-built maps over real image files (40x56 px, 16x16 maps).

A 16 -> (40, 56) upsample scales rows by 2.5 and columns by 3.5. A block of value 10 on
map rows 4-7 and columns 8-11 crosses the threshold 5 exactly half-way between map pixel
centres, i.e. on the block's edges: original rows [10, 20) and columns [28, 42).
"""

import numpy as np
import pytest
from PIL import Image

from components import localize, overlay
from pipeline.core.config import EvaluateConfig

H, W, S = 40, 56, 16
BOX = (10, 28, 20, 42)  # y0, x0, y1, x1 of the planted block at the original size


def _blob_map(value=10.0):
    amap = np.zeros((S, S), np.float32)
    amap[4:8, 8:12] = value
    return amap


def make_test(tmp_path, n_good=3, n_bad=3, masks=False):
    """A fake evaluate ``test`` dict; defective images carry the planted block."""
    rng = np.random.default_rng(0)
    columns = {k: [] for k in ("score", "anomaly_map", "label", "defect_type", "path")}
    mask_paths = {}
    for i in range(n_good + n_bad):
        bad = i >= n_good
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        columns["anomaly_map"].append(_blob_map() if bad else np.zeros((S, S), np.float32))
        columns["score"].append(float(i))  # defects score 3, 4, 5; normals 0, 1, 2
        columns["label"].append(int(bad))
        columns["defect_type"].append(("crack", "crack", "scratch")[i - n_good] if bad else "good")
        columns["path"].append(str(path))
        if masks and bad:
            mask = np.zeros((H, W), np.uint8)
            mask[BOX[0] : BOX[2], BOX[1] : BOX[3]] = 255
            mask_paths[str(path)] = str(tmp_path / f"img{i}_mask.png")
            Image.fromarray(mask).save(mask_paths[str(path)])
    test = {k: np.array(v) for k, v in columns.items()}
    n = len(test["path"])
    test.update(
        latent=test["score"],
        residual=test["score"],
        mask=np.zeros((n, S, S), np.uint8),
        roi=np.ones((n, S, S), np.uint8),
    )
    return (test, mask_paths) if masks else test


def test_map_threshold_is_the_quantile_inside_the_roi():
    maps = np.arange(2 * 4 * 4, dtype=float).reshape(2, 4, 4)
    assert localize.map_threshold(maps, 0.5) == pytest.approx(15.5)
    assert localize.map_threshold(maps, 1.0) == 31.0
    roi = np.zeros((4, 4), np.uint8)
    roi[0, :2] = 1  # keeps 0, 1 (image 0) and 16, 17 (image 1)
    assert localize.map_threshold(maps, 0.0, roi) == 0.0
    assert localize.map_threshold(maps, 0.5, roi) == pytest.approx(8.5)
    with pytest.raises(ValueError):
        localize.map_threshold(maps, 1.5)


def test_localize_finds_the_planted_block_in_original_pixels(tmp_path):
    test = make_test(tmp_path)
    frame = localize.localize(test, 5.0, EvaluateConfig(min_region_area=16))
    assert list(frame.columns) == localize.REGION_COLUMNS
    assert frame["path"].tolist() == test["path"][3:].tolist()  # clean maps: no rows
    row = frame.iloc[0]
    assert np.allclose([row.y0, row.x0, row.y1, row.x1], BOX, atol=1)
    assert row.area == pytest.approx(10 * 14, abs=30)
    assert row.peak == pytest.approx(10.0)
    assert (row.defect_type, row.label, row.region) == ("crack", 1, 0)


def test_min_area_max_area_and_min_mean_rules(tmp_path):
    test = make_test(tmp_path, n_good=0, n_bad=1)
    area = int(localize.localize(test, 5.0, EvaluateConfig(min_region_area=1)).area[0])
    assert len(localize.localize(test, 5.0, EvaluateConfig(min_region_area=area))) == 1
    assert localize.localize(test, 5.0, EvaluateConfig(min_region_area=area + 1)).empty
    assert localize.localize(test, 5.0, EvaluateConfig(max_region_area=area - 1)).empty
    assert localize.localize(test, 5.0, EvaluateConfig(min_region_mean=10.5)).empty


def test_roi_blanks_a_region_outside_it(tmp_path):
    test = make_test(tmp_path, n_good=0, n_bad=1)
    test["roi"][:, :, 8:] = 0  # the right half of the map, where the block lies
    assert localize.localize(test, 5.0, EvaluateConfig(min_region_area=1)).empty
    test["roi"][:, :, :] = 1
    test["roi"][:, :, 10:] = 0  # cuts the block: only map columns 8-9 remain
    [row] = localize.localize(test, 5.0, EvaluateConfig(min_region_area=1)).itertuples()
    assert (row.x0, row.x1) == (28, 35)  # nearest ROI edge at column 10 * 3.5 = 35


def test_regions_sorted_by_path_then_peak(tmp_path):
    test = make_test(tmp_path, n_good=0, n_bad=1)
    test["anomaly_map"][0, 12:14, 1:3] = 20.0  # a second, hotter block
    frame = localize.localize(test, 5.0, EvaluateConfig(min_region_area=1))
    assert frame["peak"].tolist() == [20.0, 10.0]
    assert frame["region"].tolist() == [0, 1]


def test_center_crop_and_letterbox_geometry():
    amap = np.zeros((S, S))
    amap[:, :8] = 1.0  # the left half of the model input
    crop = localize.full_size(amap, (H, W), "center_crop")
    # The crop is the central 40x40 (columns 8-47); outside it the model saw nothing.
    assert np.isnan(crop[:, :8]).all() and np.isnan(crop[:, 48:]).all()
    assert crop[:, 8:27].min() > 0.999 and crop[:, 29:48].max() < 0.001
    amap[:2] = amap[13:] = 100.0  # letterbox padding rows: never on the image
    letter = localize.full_size(amap, (H, W), "letterbox")
    assert not np.isnan(letter).any() and letter.shape == (H, W) and letter.max() <= 1.0
    assert letter[:, :26].min() > 0.999 and letter[:, 30:].max() < 0.001


def test_image_size_follows_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: load_image returns it transposed
    Image.new("RGB", (W, H)).save(tmp_path / "r.jpg", exif=exif)
    Image.new("RGB", (W, H)).save(tmp_path / "p.png")
    assert localize.image_size(tmp_path / "r.jpg") == (W, H)
    assert localize.image_size(tmp_path / "p.png") == (H, W)


def test_save_overlays_writes_valid_pngs(tmp_path):
    test, mask_paths = make_test(tmp_path, masks=True)
    frame = localize.localize(test, 5.0, EvaluateConfig(min_region_area=1))
    paths = [test["path"][0], test["path"][4]]
    files = localize.save_overlays(test, frame, 5.0, tmp_path / "out", paths, mask_paths)
    assert [f.name for f in files] == ["0000_good_img0.png", "0004_crack_img4.png"]
    for file in files:
        assert file.parent == tmp_path / "out" / "overlays"
        with Image.open(file) as img:
            img.verify()
            assert img.format == "PNG" and img.size == overlay.layout(H, W)[2]
