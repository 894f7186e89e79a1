"""Open and fully decode every dataset file at ingest, so bad files fail early and by name.

Decisions:

* One decoder: pixels come from ``models.decoding.decode``, the TensorFlow code the
  SavedModel runs on served bytes, so a file gives the same pixels in training and in
  serving. Pillow only reads headers (size, mode, EXIF) to check limits before decoding.
* Supported formats are what that decoder reads: PNG, JPEG and BMP (8-bit grey, 24- and
  32-bit), chosen by extension (``layouts.IMAGE_EXTENSIONS``) and by content. TIFF, palette
  and 1-bit BMPs are found but refused with the reason (the served model could not decode
  them; convert them to PNG). GIF and WEBP are rejected as unsupported extensions.
  A supported file whose content is another supported format is accepted with a note; a file
  whose content is not an image is rejected.
* The pixel limit is checked against the header size before any decoding. Pillow's own
  decompression-bomb check is switched off meanwhile (it would fire first, or not at all,
  depending on the limit) and truncated images are never silently accepted.
* ``load_image`` returns uint8 ``[H, W, C]`` after EXIF orientation. 16-bit images are scaled
  linearly (``v / 257``), so a 12-bit sensor image looks dark: we keep intensities comparable
  between images rather than stretching each one. Alpha (RGBA, LA, palette transparency) is
  composited on black: colour under fully transparent pixels is arbitrary, black is not.
  CMYK JPEGs are converted to RGB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageFile, UnidentifiedImageError

from components.sources.layouts import IMAGE_EXTENSIONS
from models.decoding import decode_bytes, error_sentence
from pipeline.core.errors import DataError

_FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "MPO": (".jpg", ".jpeg")}
_FORMATS |= {"BMP": (".bmp",), "TIFF": (".tif", ".tiff")}
_OPEN_FORMATS = ["PNG", "JPEG", "BMP", "TIFF"]  # MPO is opened through the JPEG plugin
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
_GRAY = ("1", "L") + _SIXTEEN_BIT
_COLOUR = ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P")
_EXIF_ORIENTATION = 0x0112
# Read by Pillow's header parser but not by the TensorFlow decoder the SavedModel runs.
_NOT_SERVABLE = "the served model decodes PNG, JPEG and 8/24/32-bit BMP; convert it to PNG"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

# Pillow's limits are process globals; hold them steady while we open and decode.
_PIL_LOCK = threading.RLock()


@dataclasses.dataclass
class ImageInfo:
    """What ingest learnt about one image.

    Attributes:
        width: Width after EXIF orientation.
        height: Height after EXIF orientation.
        channels: 1 for grayscale sources, 3 for colour ones (after conversion).
        mode: Pillow mode of the file as stored (e.g. ``"I;16"``, ``"CMYK"``).
        sha256: Hex digest of the file bytes.
        notes: Conversions that loading will apply, e.g. ``"converted from CMYK"``.

    """

    width: int
    height: int
    channels: int
    mode: str
    sha256: str
    notes: list[str] = dataclasses.field(default_factory=list)


class BadFile(DataError):
    """A file that cannot be used; ``str(e) == f"{path}: {reason}"``."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@contextlib.contextmanager
def _pil_guard() -> Iterator[None]:
    """Disable Pillow's bomb check (we check ourselves) and forbid truncated loads."""
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _read_bytes(path: Path) -> bytes:
    try:
        if not path.is_file():
            reason = "broken symlink" if path.is_symlink() else "not a regular file"
            raise BadFile(path, "file not found" if not os.path.lexists(path) else reason)
        data = path.read_bytes()
    except OSError as err:
        raise BadFile(path, f"cannot read ({err.strerror or err})") from err
    if not data:
        raise BadFile(path, "empty file (0 bytes)")
    return data


def _open(path: Path, data: bytes) -> Image.Image:
    """Open ``data`` (header only); must be called under ``_pil_guard``."""
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        shown = ext or "no extension"
        raise BadFile(path, f"unsupported format {shown} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    try:
        return Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as err:
        raise BadFile(path, f"content is not a PNG, JPEG or BMP image ({ext})") from err
    except _DECODE_ERRORS as err:
        raise BadFile(path, f"corrupt image header ({err})") from err


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation the decoder applies: JPEG's only (``models.decoding``)."""
    if img.format not in ("JPEG", "MPO"):
        return 1
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        return 1


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as ``load_image`` will return it: EXIF 5-8 swap the sides."""
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def _mode_notes(path: Path, img: Image.Image) -> tuple[int, list[str]]:
    """Return the channel count loading will give and the conversions it will apply."""
    mode, notes = img.mode, []
    if mode not in _GRAY + _COLOUR + _ALPHA:
        raise BadFile(path, f"unsupported pixel mode {mode}")
    if mode in _SIXTEEN_BIT:
        notes.append("16-bit scaled to 8-bit")
    elif mode == "1":
        notes.append("converted from 1-bit")
    elif mode in ("P", "PA"):
        notes.append("converted from palette")
    elif mode not in ("L", "RGB", "LA", "RGBA"):
        notes.append(f"converted from {mode}")
    if img.format == "BMP" and mode in _ALPHA:
        notes.append("4th byte of the 32-bit BMP ignored")
    elif mode in _ALPHA or (mode == "P" and "transparency" in img.info):
        notes.append("alpha composited on black")
    channels = 1 if mode in _GRAY or mode in ("LA", "La") else 3
    return channels, notes


def _check_servable(path: Path, img: Image.Image) -> None:
    """Refuse what Pillow reads but the SavedModel's TensorFlow decoder does not."""
    if img.format == "TIFF":
        raise BadFile(path, f"TIFF is not supported: {_NOT_SERVABLE}")
    if img.format == "BMP" and img.mode in ("P", "1"):
        kind = "palette" if img.mode == "P" else "1-bit"
        raise BadFile(path, f"{kind} BMP is not supported: {_NOT_SERVABLE}")


def _decode(path: Path, data: bytes, channels: int, kind: str = "image") -> np.ndarray:
    """Decodes with the SavedModel's decoder, naming the file when it fails."""
    try:
        return decode_bytes(data, channels)
    except tf.errors.InvalidArgumentError as err:
        reason = error_sentence(err)
        raise BadFile(path, f"cannot decode {kind}: truncated or corrupt ({reason})") from None


def _check_path(path: Path, root: Path | None) -> None:
    """Reject a path that, through a symlink, leads outside ``root`` (None: allowed)."""
    if root is None:
        return
    lexical, real = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    if lexical != real and not real.is_relative_to(os.path.realpath(root)):
        raise BadFile(path, f"symlink leaves the dataset root (points to {real})")


def inspect_image(path: Path, root: Path | None, max_pixels: int, min_side: int = 0) -> ImageInfo:
    """Open and fully decode one image, returning its size, channels, hash and notes.

    Args:
        path: The image file.
        root: The dataset root; symlinks may not lead outside it. None allows
            them (``data.external_symlinks: follow``, e.g. symlinked MVTec views).
        max_pixels: Largest accepted width * height, checked before decoding.
        min_side: Smallest accepted width and height.

    Raises:
        BadFile: If the file is missing, empty, unsupported, corrupt, truncated, too large,
            too small or a symlink out of ``root``.

    """
    path = Path(path)
    _check_path(path, root)
    data = _read_bytes(path)
    with _pil_guard():
        img = _open(path, data)
        width, height = img.size
        if width * height > max_pixels:
            raise BadFile(path, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
        if min(width, height) < min_side:
            raise BadFile(path, f"{width}x{height} is smaller than {min_side} pixels on a side")
        _check_servable(path, img)
    pixels = _decode(path, data, 1, img.format)
    channels, notes = _mode_notes(path, img)
    if path.suffix.lower() not in _FORMATS[img.format]:
        notes.append(f"content is {img.format} despite the {path.suffix} extension")
    height, width = pixels.shape[:2]
    orientation = _orientation(img)
    if orientation in range(2, 9):
        notes.append(f"EXIF-rotated (orientation {orientation})")
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"{img.n_frames} frames, first used")
    sha = hashlib.sha256(data).hexdigest()
    return ImageInfo(width, height, channels, img.mode, sha, notes)


def inspect_mask(mask_path: Path, image_info: ImageInfo, image_path: Path) -> str:
    """Check that a mask exists, decodes, and matches its image's (oriented) size.

    Returns:
        The hex sha256 of the mask file's bytes.

    Raises:
        BadFile: Naming ``mask_path``, if the mask is unreadable or its size differs.

    """
    mask_path = Path(mask_path)
    data = _read_bytes(mask_path)
    with _pil_guard():
        img = _open(mask_path, data)
        size = oriented_size(img)
        if size != (image_info.width, image_info.height):
            raise BadFile(
                mask_path,
                f"mask is {size[0]}x{size[1]} but image {image_path} is "
                f"{image_info.width}x{image_info.height}",
            )
        _check_servable(mask_path, img)
    _decode(mask_path, data, 1, "mask")
    return hashlib.sha256(data).hexdigest()


def load_image(path: Path, channels: int) -> np.ndarray:
    """Load an image as uint8 ``[H, W, channels]`` with the SavedModel's decoder.

    EXIF-oriented, alpha composited on black, 16-bit scaled to 8 (``models.decoding``).

    Args:
        path: An image that ``inspect_image`` accepted.
        channels: 1 (grayscale, ITU-R 601 luma) or 3 (RGB; grayscale is replicated).

    Raises:
        BadFile: If the file cannot be decoded.
        ValueError: If ``channels`` is not 1 or 3.

    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    return _decode(path, _read_bytes(path), channels)


def find_leaks(records_with_sha: list[tuple[Path, str, str]]) -> list[tuple[Path, Path]]:
    """Find files whose bytes appear both in training and in test.

    Args:
        records_with_sha: ``(path, split, sha256)`` per file. Any non-empty split other than
            ``"test"`` (``"train"``, ``"val"``) counts as the training side; unassigned
            (``""``) files are ignored.

    Returns:
        Sorted ``(train_path, test_path)`` pairs: each test file paired with the first
        (sorted) training file holding the same bytes.

    """
    train_by_sha: dict[str, Path] = {}
    for path, split, sha in sorted(records_with_sha, key=lambda r: str(r[0])):
        if split not in ("", "test"):
            train_by_sha.setdefault(sha, Path(path))
    leaks = [
        (train_by_sha[sha], Path(path))
        for path, split, sha in records_with_sha
        if split == "test" and sha in train_by_sha
    ]
    return sorted(leaks, key=lambda pair: (str(pair[1]), str(pair[0])))
