"""The one image decoder: file bytes to pixels, the same TensorFlow ops everywhere.

    from models.decoding import decode
    pixels = decode(tf.io.read_file("part.jpg"), channels=1)   # uint8 [H, W, 1]

Ingest checks each file with it, the preprocess stage decodes with it and the
SavedModel's ``serving_bytes`` runs it, so a file gives the same pixels in
training and in serving. What it reads, and how:

* PNG: 1 to 16 bits, grey, grey + alpha, RGB, RGBA, palette (with or without
  transparency). 16-bit samples are scaled linearly to 8 bits (``v / 257``,
  rounded), keeping intensities comparable between images.
* JPEG (and MPO, its first frame): grey, RGB, CMYK, with libjpeg's accurate
  integer DCT (as Pillow and OpenCV); the EXIF orientation
  (APP1 tag 0x0112, values 2 to 8) is applied as Pillow's ``exif_transpose``.
* BMP: 8-bit grey, 24-bit and 32-bit (its 4th byte ignored). Palette and 1-bit BMPs and every other
  format (TIFF, GIF, WEBP) are not decodable here; ingest refuses them.
* Alpha is composited on black (``(c * a + 127) // 255``): colour under a
  transparent pixel is arbitrary, black is not.
* Grey from colour uses ITU-R 601 luma in Pillow's fixed point
  (``(19595 R + 38470 G + 7471 B + 32768) >> 16``); grey to colour repeats it.
"""

from __future__ import annotations

import re

import tensorflow as tf

# Magic numbers: the first bytes of each decodable format.
_PNG, _JPEG, _BMP = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM"
FORMATS = ("PNG", "JPEG", "BMP")
# The EXIF block sits in a JPEG APP1 segment (at most 64 KiB) near the start.
_EXIF_SEARCH_BYTES = 1 << 17
_EXIF_MAGIC = (0x45, 0x78, 0x69, 0x66, 0, 0)  # "Exif\0\0"
_ORIENTATION_TAG = 0x0112
_JPEG_START_OF_SCAN, _JPEG_APP1 = 0xDA, 0xE1


def image_format(encoded: tf.Tensor) -> tf.Tensor:
    """Index into ``FORMATS`` of a file's content (its magic bytes), or -1."""
    checks = [tf.strings.substr(encoded, 0, len(magic)) == magic for magic in (_PNG, _JPEG, _BMP)]
    found = tf.cast(tf.stack(checks), tf.int32)
    return tf.where(tf.reduce_any(checks), tf.argmax(found, output_type=tf.int32), -1)


def _byte_reader(encoded: tf.Tensor):
    """``(n, read)``: the header's length and a reader of unsigned ints at an offset.

    ``read(offset, size, little_endian)`` returns an int32; offsets past the
    end read as zero, so a damaged header yields nonsense values, never an error.
    """
    head = tf.io.decode_raw(tf.strings.substr(encoded, 0, _EXIF_SEARCH_BYTES), tf.uint8)
    padded = tf.cast(tf.concat([head, tf.zeros([8], tf.uint8)], 0), tf.int32)
    n = tf.shape(head)[0]

    def read(offset, size, little_endian=False):
        offset = tf.clip_by_value(offset, 0, n)
        parts = [padded[offset + i] for i in range(size)]  # in file order
        big = _combine(parts[::-1])
        if little_endian is False:
            return big
        return tf.where(little_endian, _combine(parts), big)

    return n, read


def _combine(parts_low_first) -> tf.Tensor:
    value = tf.constant(0, tf.int32)
    for shift, part in enumerate(parts_low_first):
        value += part * (256**shift)
    return value


def _find_exif(n, read) -> tf.Tensor:
    """Offset of the EXIF TIFF header in a JPEG (walking its segments), or -1."""

    def searching(pos, found):
        marker = tf.equal(read(pos, 1), 0xFF)
        marker_ok = marker & tf.not_equal(read(pos + 1, 1), _JPEG_START_OF_SCAN)
        return (found < 0) & (pos + 4 <= n) & marker_ok

    def next_segment(pos, found):
        length = read(pos + 2, 2)
        is_exif = tf.equal(read(pos + 1, 1), _JPEG_APP1)
        for i, byte in enumerate(_EXIF_MAGIC):
            is_exif &= tf.equal(read(pos + 4 + i, 1), byte)
        # A length below 2 is corrupt: step past the end so the walk stops.
        step = tf.where(length < 2, n, 2 + length)
        return pos + step, tf.where(is_exif, pos + 10, -1)

    _, found = tf.while_loop(searching, next_segment, (tf.constant(2), tf.constant(-1)))
    return found


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1 to 8) of JPEG bytes; 1 when absent or not a JPEG."""
    n, read = _byte_reader(encoded)
    tiff = tf.where(image_format(encoded) == FORMATS.index("JPEG"), _find_exif(n, read), -1)
    little = tf.equal(read(tiff, 2), 0x4949)  # "II": Intel byte order
    ifd = tiff + read(tiff + 4, 4, little)
    # Without an EXIF block the "IFD" is whatever bytes lie there: walking up to 1,024 of its
    # "entries" cost about 25 ms a JPEG (most of a decode) to find nothing.
    entries = tf.where(tiff >= 0, tf.minimum(read(ifd, 2, little), 1024), 0)

    def not_found(i, value):
        return (i < entries) & (value == 0)

    def next_entry(i, value):
        entry = ifd + 2 + 12 * i
        hit = tf.equal(read(entry, 2, little), _ORIENTATION_TAG)
        return i + 1, tf.where(hit, read(entry + 8, 2, little), 0)

    _, value = tf.while_loop(not_found, next_entry, (tf.constant(0), tf.constant(0)))
    valid = (tiff >= 0) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Applies EXIF ``orientation`` to ``[H, W, C]`` as Pillow's ``exif_transpose``."""

    def transpose():
        return tf.transpose(image, [1, 0, 2])

    branches = [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: flipped
        transpose,  # 5
        lambda: tf.image.rot90(image, 3),  # 6: turned 90 degrees clockwise
        lambda: tf.reverse(transpose(), [0, 1]),  # 7: transverse
        lambda: tf.image.rot90(image, 1),  # 8: turned 90 degrees counter-clockwise
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches)


def _composite_alpha(image: tf.Tensor) -> tf.Tensor:
    """``[H, W, C]`` uint8 with C in 1-4 -> without alpha, composited on black."""
    count = tf.shape(image)[-1]

    def composite():
        wide = tf.cast(image, tf.int32)
        colour, alpha = wide[..., :-1], wide[..., -1:]
        return tf.cast((colour * alpha + 127) // 255, tf.uint8)

    has_alpha = tf.equal(count, 2) | tf.equal(count, 4)
    return tf.cond(has_alpha, composite, lambda: image)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 ``[H, W, 1 or 3]`` -> ``[H, W, channels]`` (601 luma, or grey repeated)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    count = tf.shape(image)[-1]
    if channels == 3:
        return tf.cond(tf.equal(count, 1), lambda: tf.tile(image, [1, 1, 3]), lambda: image)

    def luma():
        rgb = tf.cast(image, tf.int32)
        weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768
        return tf.cast(tf.bitwise.right_shift(weighted, 16), tf.uint8)[..., None]

    return tf.cond(tf.equal(count, 3), luma, lambda: image)


def _decode_png(encoded):
    wide = tf.cast(tf.io.decode_png(encoded, channels=0, dtype=tf.uint16), tf.float32)
    # 8-bit files come back as v * 257, so this is exact for them.
    return tf.cast(tf.round(wide / 257.0), tf.uint8)


def _decode_jpeg(encoded):
    # INTEGER_ACCURATE is libjpeg's default DCT, the one Pillow and OpenCV use.
    image = tf.io.decode_jpeg(encoded, channels=0, dct_method="INTEGER_ACCURATE")
    return orient(image, exif_orientation(encoded))


def _decode_bmp(encoded):
    image = tf.io.decode_bmp(encoded, channels=0)
    # The 4th byte of a 32-bit BMP is mostly padding (often 0): read as alpha it
    # would black out the image, so it is dropped, as Pillow and viewers do.
    return image[..., : tf.minimum(tf.shape(image)[-1], 3)]


def _not_decodable(encoded):
    check = tf.debugging.Assert(
        False, ["the file is not a PNG, JPEG or BMP image (its first bytes match none of them)"]
    )
    with tf.control_dependencies([check]):
        return tf.zeros([0, 0, 1], tf.uint8)


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded PNG/JPEG/BMP bytes (a scalar string) -> uint8 ``[H, W, channels]``.

    Raises:
        tf.errors.InvalidArgumentError: when the bytes are not a decodable image.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    branches = [
        lambda: _decode_png(encoded),
        lambda: _decode_jpeg(encoded),
        lambda: _decode_bmp(encoded),
        lambda: _not_decodable(encoded),
    ]
    kind = image_format(encoded)
    image = tf.switch_case(tf.where(kind < 0, len(FORMATS), kind), branches)
    image = to_channels(_composite_alpha(image), channels)
    return tf.ensure_shape(image, [None, None, channels])


def error_sentence(error: tf.errors.InvalidArgumentError) -> str:
    """The one sentence of a refused decode or request, without TensorFlow's node details.

    TensorFlow puts the op's message on the line before ``[[{{node ...}}]]``, after a
    stack trace when one is known. ``"assertion failed: [...; got shape] [1 8 8 3]"``
    becomes ``"...; got shape 1 8 8 3"``; a decoder's own error (``"Invalid PNG data,
    size 50"``) is kept as it is.
    """
    lines = [line.strip() for line in error.message.splitlines()]
    end = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
    message = [line for line in lines[:end] if line]
    if not message:
        return error.message.strip()
    line = message[-1] if end < len(lines) else message[0]
    line = line.removeprefix("assertion failed: ")
    return re.sub(r"\]\s*\[", " ", line).strip("[]")


@tf.function(reduce_retracing=True)
def _decode_file_bytes(encoded, channels):
    return decode(encoded, channels)


def decode_bytes(data: bytes, channels: int):
    """Python bytes -> uint8 numpy ``[H, W, channels]`` (one compiled graph per channels)."""
    return _decode_file_bytes(tf.constant(data), channels).numpy()
