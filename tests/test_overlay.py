"""components.overlay: the three panels drawn with numpy and Pillow, checked pixel by pixel."""

import numpy as np
from matplotlib import colormaps

from components import overlay
from models.regions import Region

H, W = 40, 56


def _picture(amap, regions=(), gt_mask=None, threshold=1.0):
    image = np.full((H, W, 3), 100, np.uint8)
    picture = overlay.draw(image, amap, list(regions), gt_mask, threshold, "part.png  score 3.00")
    return np.asarray(picture), overlay.layout(H, W)


def _panel(pixels, layout, index):
    zoom, lefts, _ = layout
    top = overlay.HEADER
    return pixels[top : top + H * zoom : zoom, lefts[index] : lefts[index] + W * zoom : zoom]


def test_the_jet_table_is_matplotlibs_jet():
    expected = colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255
    assert np.abs(overlay.JET.astype(float) - expected).max() <= 0.5 + 1e-9  # rounding only


def test_panels_show_the_image_the_map_over_it_and_the_boxes():
    amap = np.zeros((H, W))
    amap[10:20, 28:42] = 2.0  # the top of the scale, 2 x threshold: jet's dark red
    amap[:, :4] = np.nan  # never seen by the model: the image shows through
    pixels, layout = _picture(amap, [Region(10, 28, 20, 42, 140, 2.0, 2.0)])
    zoom, _, size = layout
    assert pixels.shape == (size[1], size[0], 3) and zoom == 4  # 40 px enlarged to 160
    image, heat, boxes = (_panel(pixels, layout, i) for i in range(3))
    assert np.all(image == 100)
    # Half image, half colour: 0 is jet's dark blue, 2 x threshold its dark red.
    np.testing.assert_array_equal(heat[15, 30], (100 + overlay.JET[255]) // 2)
    np.testing.assert_array_equal(heat[0, 10], (100 + overlay.JET[0]) // 2)
    assert np.all(heat[:, :4] == 100)
    # The box's edge is red, its inside and the rest untouched.
    assert tuple(boxes[10, 35]) == overlay.RED and tuple(boxes[19, 35]) == overlay.RED
    assert tuple(boxes[15, 28]) == overlay.RED and tuple(boxes[15, 41]) == overlay.RED
    assert np.all(boxes[12:18, 30:40] == 100) and np.all(boxes[25:, :] == 100)


def test_the_ground_truth_is_outlined_in_green():
    mask = np.zeros((H, W), bool)
    mask[5:15, 5:15] = True
    pixels, layout = _picture(np.zeros((H, W)), gt_mask=mask)
    boxes = _panel(pixels, layout, 2)
    green = np.all(boxes == overlay.GREEN, axis=-1)
    border = mask.copy()
    border[6:14, 6:14] = False
    np.testing.assert_array_equal(green, border)


def test_large_images_are_not_enlarged():
    zoom, lefts, size = overlay.layout(300, 600)
    assert zoom == 1 and size[0] == lefts[2] + 600 + overlay.GAP and size[1] == 300 + overlay.HEADER
