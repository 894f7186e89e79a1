"""Hand-built maps for models.regions: boxes and areas are counted by hand."""

import numpy as np
import pytest

from models.regions import Region, find_regions, upsample_map


def _two_blobs():
    """10x12 map: an L-shaped blob (peak 0.9) and a 2x2 square (peak 0.7)."""
    amap = np.zeros((10, 12))
    amap[1:4, 1] = 0.6  # vertical bar rows 1-3 at column 1 ...
    amap[3, 2:4] = 0.6  # ... plus a foot at row 3, columns 2-3 -> 5 px, box [1,4)x[1,4)
    amap[1, 1] = 0.9
    amap[6:8, 8:10] = 0.7  # 4 px, box [6,8)x[8,10)
    return amap


def test_two_blobs_give_exact_boxes_areas_and_order():
    regions = find_regions(_two_blobs(), threshold=0.5)
    # Sorted by peak: the L (0.9) first. Its mean is (0.9 + 4 * 0.6) / 5 = 0.66.
    assert regions == [
        Region(y0=1, x0=1, y1=4, x1=4, area=5, peak=0.9, mean=pytest.approx(0.66)),
        Region(y0=6, x0=8, y1=8, x1=10, area=4, peak=0.7, mean=pytest.approx(0.7)),
    ]
    assert all(type(v) is int for v in (regions[0].y0, regions[0].x1, regions[0].area))


def test_threshold_is_inclusive_and_diagonals_connect():
    amap = np.zeros((4, 4))
    amap[0, 0] = amap[1, 1] = amap[2, 2] = 0.5  # a diagonal line is one 8-connected blob
    [region] = find_regions(amap, threshold=0.5)
    assert (region.y0, region.x0, region.y1, region.x1, region.area) == (0, 0, 3, 3, 3)
    assert find_regions(amap, threshold=0.51) == []


def test_area_and_mean_filters():
    amap = _two_blobs()
    assert [r.area for r in find_regions(amap, 0.5, min_area=5)] == [5]
    assert [r.area for r in find_regions(amap, 0.5, min_area=6)] == []
    assert [r.area for r in find_regions(amap, 0.5, max_area=4)] == [4]
    # Means are 0.66 and 0.7: a 0.68 floor keeps only the square.
    assert [r.area for r in find_regions(amap, 0.5, min_mean=0.68)] == [4]


def test_roi_masks_out_pixels_and_can_split_a_blob():
    amap = _two_blobs()
    roi = np.ones(amap.shape, dtype=bool)
    roi[6:8, 8:10] = False  # hide the square
    roi[2, :] = False  # cut the L: row 1 (1 px, 0.9) and row 3 (3 px, 0.6) remain
    regions = find_regions(amap, 0.5, roi=roi)
    assert [(r.y0, r.x0, r.y1, r.x1, r.area) for r in regions] == [
        (1, 1, 2, 2, 1),
        (3, 1, 4, 4, 3),
    ]
    with pytest.raises(ValueError):
        find_regions(amap, 0.5, roi=np.ones((3, 3), bool))


def test_empty_map_has_no_regions():
    assert find_regions(np.zeros((5, 5)), threshold=0.1) == []


@pytest.mark.parametrize("size", [(256, 256), (100, 37), (7, 300), (1, 1)])
def test_upsample_exact_size_and_value_range(size):
    amap = np.random.default_rng(0).random((31, 17))
    out = upsample_map(amap, size)
    assert out.shape == size
    assert amap.min() - 1e-12 <= out.min() and out.max() <= amap.max() + 1e-12


def test_upsample_is_bilinear_with_aligned_pixel_centres():
    # 1x2 map [0, 1] -> 1x4: output centres map to input x = -0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1] -> values 0, 0.25, 0.75, 1.
    out = upsample_map(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
    # Constant maps stay constant; same size is the identity.
    np.testing.assert_allclose(upsample_map(np.full((3, 5), 2.5), (64, 64)), 2.5)
    amap = np.random.default_rng(1).random((8, 9))
    np.testing.assert_allclose(upsample_map(amap, (8, 9)), amap)


def test_upsampled_blob_stays_in_place():
    amap = np.zeros((8, 8))
    amap[2:4, 4:6] = 1.0  # covers [0.25, 0.5) x [0.5, 0.75) of the image
    [region] = find_regions(upsample_map(amap, (64, 64)), threshold=0.5)
    # Output row i samples input row (i + 0.5) / 8 - 0.5; the ramp from row 1 (0) to row 2
    # (1) crosses 0.5 at input 1.5, i.e. i = 15.5, and the far ramp at i = 31.5, so the
    # 0.5 level set is exactly the scaled box: rows [16, 32), columns [32, 48).
    assert (region.y0, region.x0, region.y1, region.x1) == (16, 32, 32, 48)
