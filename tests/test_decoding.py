"""The TensorFlow decoder gives Pillow's pixels for every file kind ingest accepts.

Pillow (with ``exif_transpose`` and its own conversions) is the independent reference;
the decoder runs inside the SavedModel, where Pillow cannot.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from models.decoding import decode, decode_bytes, exif_orientation, image_format


def _pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:56]
    smooth = np.stack([(xx * 4) % 256, (yy * 6) % 256, ((xx + yy) * 3) % 256], -1)
    return (smooth // 2 + rng.integers(0, 120, smooth.shape)).astype(np.uint8)


def _rgba() -> Image.Image:
    array = np.asarray(Image.fromarray(_pixels()).convert("RGBA")).copy()
    array[..., 3] = np.random.default_rng(1).integers(0, 256, array.shape[:2])
    return Image.fromarray(array, "RGBA")


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(Image.fromarray(_pixels()), "JPEG", exif=exif, quality=95)


RGB = Image.fromarray(_pixels())
FILES = {
    "png_grey": lambda: _encode(RGB.convert("L"), "PNG"),
    "png_grey_alpha": lambda: _encode(_rgba().convert("LA"), "PNG"),
    "png_rgb": lambda: _encode(RGB, "PNG"),
    "png_rgba": lambda: _encode(_rgba(), "PNG"),
    "png_palette": lambda: _encode(RGB.convert("P"), "PNG"),
    "png_palette_transparency": lambda: _encode(RGB.convert("P"), "PNG", transparency=3),
    "png_16_bit": lambda: _encode(
        Image.fromarray(_pixels()[..., 0].astype(np.uint16) * 251), "PNG"
    ),
    "png_1_bit": lambda: _encode(Image.fromarray(_pixels()[..., 0] > 128), "PNG"),
    "bmp_grey": lambda: _encode(RGB.convert("L"), "BMP"),
    "bmp_rgb": lambda: _encode(RGB, "BMP"),
    "jpeg_grey": lambda: _encode(RGB.convert("L"), "JPEG"),
    "jpeg_rgb": lambda: _encode(RGB, "JPEG"),
    "jpeg_rgb_444": lambda: _encode(RGB, "JPEG", subsampling=0),
    "jpeg_cmyk": lambda: _encode(RGB.convert("CMYK"), "JPEG"),
    **{f"jpeg_exif_{o}": (lambda o=o: _exif_jpeg(o)) for o in range(1, 9)},
}


def _pillow(data: bytes, channels: int) -> np.ndarray:
    """The reference: Pillow decodes, orients, composites alpha on black, converts."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode.startswith("I"):
        grey = np.rint(np.asarray(img).astype(np.float64) / 257).astype(np.uint8)
        img = Image.fromarray(grey)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        wide = np.asarray(img).astype(np.uint16)
        img = Image.fromarray(
            ((wide[..., :-1] * wide[..., -1:] + 127) // 255).astype(np.uint8).squeeze()
        )
    return np.atleast_3d(np.asarray(img.convert("L" if channels == 1 else "RGB")))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_decoder_gives_pillows_pixels(kind, channels):
    data = FILES[kind]()
    got = decode_bytes(data, channels)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _pillow(data, channels))


def test_exif_orientation_is_read_from_the_jpeg_header():
    got = [int(exif_orientation(tf.constant(_exif_jpeg(o)))) for o in range(1, 9)]
    assert got == list(range(1, 9))
    assert int(exif_orientation(tf.constant(FILES["jpeg_rgb"]()))) == 1
    assert int(exif_orientation(tf.constant(FILES["png_rgb"]()))) == 1
    turned = decode_bytes(_exif_jpeg(6), 3)
    assert turned.shape == (56, 40, 3)  # portrait: the sides swapped


def test_32_bit_bmp_ignores_its_fourth_byte():
    data = _encode(_rgba(), "BMP")
    np.testing.assert_array_equal(decode_bytes(data, 3), np.asarray(_rgba().convert("RGB")))


@pytest.mark.parametrize(
    "data,fmt", [(b"\x89PNG\r\n\x1a\nxx", 0), (b"\xff\xd8\xff\xe0", 1), (b"BMxx", 2), (b"GIF8", -1)]
)
def test_format_from_magic_bytes(data, fmt):
    assert int(image_format(tf.constant(data))) == fmt


@pytest.mark.parametrize("data", [b"", b"hello, not an image", _encode(RGB, "GIF")])
def test_not_an_image_is_an_invalid_argument_naming_the_formats(data):
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a PNG, JPEG or BMP image"):
        decode(tf.constant(data), 1)


def test_channels_other_than_1_or_3_are_refused():
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 4"):
        decode(tf.constant(FILES["png_rgb"]()), 4)
