"""Tests for components.image_files: each bad or unusual file gets a named outcome."""

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from components.image_files import (
    BadFile,
    ImageInfo,
    find_leaks,
    inspect_image,
    inspect_mask,
    load_image,
)

LIMIT = 10_000_000


def _noise(mode: str = "RGB", size=(64, 48)) -> Image.Image:
    bands = len(mode)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if bands == 1 else array, mode)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _bad(path: Path, root: Path, **kwargs) -> BadFile:
    with pytest.raises(BadFile) as caught:
        inspect_image(path, root, kwargs.pop("max_pixels", LIMIT), **kwargs)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.path == path
    return caught.value


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _one_bit_black_png(path: Path, side: int) -> Path:
    """Write a valid 1-bit all-black PNG of side x side without holding it in memory."""
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then packed zero bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(side // 1000))
    idat += packer.compress(row * (side % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
    path.write_bytes(png + _png_chunk(b"IEND", b""))
    return path


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _bad(path, tmp_path).reason == "empty file (0 bytes)"


@pytest.mark.parametrize(
    "name,fmt,decoder_says",
    [("cut.jpg", "JPEG", "Invalid JPEG data"), ("cut.png", "PNG", "Invalid PNG data")],
)
def test_truncated_image(tmp_path, name, fmt, decoder_says):
    path = _save(_noise(), tmp_path / name, format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reason = _bad(path, tmp_path).reason
    assert "truncated or corrupt" in reason
    # The decoder's own words, not TensorFlow's "Graph execution error:" header.
    assert decoder_says in reason
    assert "Graph execution" not in reason


def test_truncated_image_rejected_even_if_pillow_allows_truncation(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = _save(_noise(), tmp_path / "cut.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated or corrupt" in _bad(path, tmp_path).reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image at all\n")
    assert "content is not a PNG, JPEG or BMP image" in _bad(path, tmp_path).reason


@pytest.mark.parametrize("name", ["anim.gif", "photo.webp", "readme.txt", "noext"])
def test_unsupported_format(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".gif"):
        _save(_noise("L").convert("P"), path)
    else:
        path.write_bytes(b"something")
    reason = _bad(path, tmp_path).reason
    assert reason.startswith(f"unsupported format {path.suffix or 'no extension'} (supported:")


@pytest.mark.parametrize(
    "name,mode,refused",
    [("scan.tif", "RGB", "TIFF"), ("pal.bmp", "P", "palette BMP"), ("bits.bmp", "1", "1-bit BMP")],
)
def test_formats_the_served_model_cannot_decode_are_refused(tmp_path, name, mode, refused):
    path = _save(_noise().convert(mode), tmp_path / name)
    reason = _bad(path, tmp_path).reason
    assert reason.startswith(f"{refused} is not supported: the served model decodes PNG, JPEG")


def test_jpeg_content_with_png_extension_is_accepted_with_note(tmp_path):
    path = _save(_noise(), tmp_path / "really_a.png", format="JPEG")
    info = inspect_image(path, tmp_path, LIMIT)
    assert "content is JPEG despite the .png extension" in info.notes


def test_16_bit_png(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    info = inspect_image(path, tmp_path, LIMIT)
    assert (info.width, info.height, info.channels) == (4, 1, 1)
    assert info.mode.startswith("I") and "16-bit scaled to 8-bit" in info.notes
    pixels = load_image(path, 1)
    assert pixels.dtype == np.uint8 and pixels[0, :, 0].tolist() == [0, 100, 255, 4]


def test_palette_png(tmp_path):
    path = _save(_noise().convert("P"), tmp_path / "pal.png")
    info = inspect_image(path, tmp_path, LIMIT)
    assert (info.mode, info.channels, info.notes) == ("P", 3, ["converted from palette"])
    assert load_image(path, 3).shape == (48, 64, 3)


def test_rgba_png_composited_on_black(tmp_path):
    array = np.full((2, 2, 4), 200, dtype=np.uint8)
    array[0, 0, 3] = 0  # transparent: becomes black
    array[1, 1, 3] = 255
    path = _save(Image.fromarray(array, "RGBA"), tmp_path / "alpha.png")
    info = inspect_image(path, tmp_path, LIMIT)
    assert (info.channels, info.notes) == (3, ["alpha composited on black"])
    pixels = load_image(path, 3)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[1, 1].tolist() == [200, 200, 200]
    assert pixels[0, 1].tolist() == [157, 157, 157]  # 200 * 200 / 255


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), tmp_path / "print.jpg")
    info = inspect_image(path, tmp_path, LIMIT)
    assert (info.mode, info.channels, info.notes) == ("CMYK", 3, ["converted from CMYK"])
    red = load_image(path, 3)[4, 8]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_exif_rotated_jpeg(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(img, tmp_path / "phone.jpg", exif=exif)
    info = inspect_image(path, tmp_path, LIMIT)
    assert (info.width, info.height) == (20, 40)
    assert info.notes == ["EXIF-rotated (orientation 6)"]
    assert load_image(path, 3).shape == (40, 20, 3)


def test_grayscale_and_rgb_mixed(tmp_path):
    gray = _save(Image.new("L", (8, 4), 77), tmp_path / "gray.png")
    rgb = _save(Image.new("RGB", (8, 4), (255, 0, 0)), tmp_path / "rgb.bmp")
    assert inspect_image(gray, tmp_path, LIMIT).channels == 1
    assert inspect_image(rgb, tmp_path, LIMIT).channels == 3
    assert load_image(gray, 3)[0, 0].tolist() == [77, 77, 77]
    assert load_image(gray, 1).shape == (4, 8, 1)
    assert load_image(rgb, 1)[0, 0].tolist() == [76]  # ITU-R 601 luma of pure red


def test_info_fields_and_sha256(tmp_path):
    path = _save(_noise(), tmp_path / "a.bmp")
    info = inspect_image(path, tmp_path, LIMIT)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert info == ImageInfo(64, 48, 3, "RGB", digest, [])


def test_smaller_than_min_side(tmp_path):
    path = _save(Image.new("L", (30, 10)), tmp_path / "tiny.png")
    assert _bad(path, tmp_path, min_side=16).reason == "30x10 is smaller than 16 pixels on a side"
    assert inspect_image(path, tmp_path, LIMIT, min_side=10).width == 30


def test_pixel_limit_on_modest_png(tmp_path):
    path = _save(_noise(size=(100, 100)), tmp_path / "big.png")
    reason = _bad(path, tmp_path, max_pixels=5_000).reason
    assert reason == "100x100 pixels exceeds the limit of 5000"


def test_decompression_bomb_rejected_without_decoding(tmp_path, monkeypatch):
    path = _one_bit_black_png(tmp_path / "bomb.png", 20_000)
    assert path.stat().st_size < 200_000

    def no_decode(self):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    reason = _bad(path, tmp_path, max_pixels=LIMIT).reason
    assert reason == f"20000x20000 pixels exceeds the limit of {LIMIT}"


def test_pillow_bomb_error_does_not_escape(tmp_path):
    # A header claiming 40000x40000 with no usable data: above Pillow's own limit (2x its
    # default raises DecompressionBombError) but within ours, so we try to decode and fail.
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    path = tmp_path / "liar.png"
    path.write_bytes(png + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10)))
    saved = Image.MAX_IMAGE_PIXELS
    assert "truncated or corrupt" in _bad(path, tmp_path, max_pixels=2_000_000_000).reason
    assert Image.MAX_IMAGE_PIXELS == saved
    assert "40000x40000 pixels exceeds" in _bad(path, tmp_path, max_pixels=LIMIT).reason


def test_mask_size_differs(tmp_path):
    image = _save(Image.new("RGB", (20, 10)), tmp_path / "img.png")
    mask = _save(Image.new("L", (10, 10)), tmp_path / "img_mask.png")
    info = inspect_image(image, tmp_path, LIMIT)
    with pytest.raises(BadFile) as caught:
        inspect_mask(mask, info, image)
    assert str(caught.value) == f"{mask}: mask is 10x10 but image {image} is 20x10"


def test_mask_ok_and_mask_unreadable(tmp_path):
    image = _save(Image.new("RGB", (20, 10)), tmp_path / "img.png")
    info = inspect_image(image, tmp_path, LIMIT)
    inspect_mask(_save(Image.new("1", (20, 10)), tmp_path / "ok.png"), info, image)
    missing = tmp_path / "gone.png"
    with pytest.raises(BadFile, match=f"{missing}: file not found"):
        inspect_mask(missing, info, image)
    junk = tmp_path / "junk.png"
    junk.write_text("junk")
    with pytest.raises(BadFile, match="junk.png: content is not a PNG"):
        inspect_mask(junk, info, image)


def test_symlink_leaving_root(tmp_path):
    outside = _save(Image.new("L", (8, 8)), tmp_path / "elsewhere" / "secret.png")
    root = tmp_path / "data"
    link = root / "train" / "good" / "link.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    assert _bad(link, root).reason.startswith("symlink leaves the dataset root")
    inside = root / "inside.png"
    inside.symlink_to(link.parent / "real.png")
    _save(Image.new("L", (8, 8)), link.parent / "real.png")
    assert inspect_image(inside, root, LIMIT).width == 8


def test_non_ascii_file_names(tmp_path):
    root = tmp_path / "données"
    path = _save(_noise(), root / "缺陷" / "pièce_é.jpg")
    assert inspect_image(path, root, LIMIT).channels == 3
    assert load_image(path, 3).shape == (48, 64, 3)
    broken = root / "ß_ø.png"
    broken.write_bytes(b"")
    assert str(_bad(broken, root)) == f"{broken}: empty file (0 bytes)"


def test_find_leaks(tmp_path):
    a, b, c, d = (tmp_path / n for n in "abcd")
    records = [(a, "train", "x"), (b, "test", "x"), (c, "test", "y"), (d, "", "y")]
    records.append((tmp_path / "e", "val", "y"))
    assert find_leaks(records) == [(a, b), (tmp_path / "e", c)]
    assert find_leaks([(a, "train", "x"), (b, "train", "x")]) == []
