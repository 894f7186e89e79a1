"""Native-resolution tiles: a fixed grid of model-sized tiles over an image, maps stitched back.

    grid = TileGrid.of(spec)            # None when ``preprocess.tiles`` is off
    tiles = grid.cut(images)            # [B, H, W, C] -> [B * T, isize, isize, C]
    full = grid.stitch(tile_maps)       # [B * T, isize, isize, C] -> [B, H, W, C]

With ``preprocess.tiles: [side, overlap]`` (original pixels) every image is
resized once to its size at tile scale (``tiles_image`` times ``isize / side``,
the *map size*) and cut into ``isize`` tiles that overlap by ``overlap`` scaled
the same way; the last row and column of tiles are aligned with the image's
far edge, so every pixel is covered. A small defect keeps its pixels instead
of being squashed with the whole image into ``isize``. The grid is static:
the same tiles for every image, in training, evaluation and the SavedModel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops


def tile_origins(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Starts of tiles of ``tile`` pixels every ``stride`` along ``length``; the last ends at it."""
    if length <= tile:
        return (0,)
    return (*range(0, length - tile, stride), length - tile)


def map_size(spec: dict) -> tuple[int, int]:
    """``(H, W)`` of the preprocessed image: ``(isize, isize)``, or the tiled one's size.

    A defect head's spec (``models.preprocessing.head_spec_of``) gives its ``size``.
    """
    isize = spec["isize"]
    if spec.get("size"):
        return tuple(spec["size"])
    if not spec.get("tiles"):
        return isize, isize
    side = spec["tiles"][0]
    if not spec.get("tiles_image"):
        raise ValueError("preprocess.tiles_image is not resolved: run the preprocess stage")
    height, width = spec["tiles_image"]
    return max(isize, round(height * isize / side)), max(isize, round(width * isize / side))


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one preprocessed image lie.

    Attributes:
        isize: the tile side, the model's input size.
        size: ``(H, W)`` of the whole preprocessed image (the map size).
        rows: the tiles' top rows.
        cols: the tiles' left columns.
    """

    isize: int
    size: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, spec: dict) -> TileGrid | None:
        """The grid of a preprocess spec with ``tiles`` (and ``tiles_image``) set; else None."""
        if not spec.get("tiles"):
            return None
        isize, (side, overlap) = spec["isize"], spec["tiles"]
        size = map_size(spec)
        stride = max(1, round((side - overlap) * isize / side))
        rows = tile_origins(size[0], isize, stride)
        return cls(isize, size, rows, tile_origins(size[1], isize, stride))

    @property
    def count(self) -> int:
        """Tiles per image."""
        return len(self.rows) * len(self.cols)

    def _origins(self):
        return [(top, left) for top in self.rows for left in self.cols]

    def cut(self, images):
        """``[B, H, W, C] -> [B * T, isize, isize, C]``, the tiles of each image in row order."""
        t = self.isize
        tiles = [images[:, top : top + t, left : left + t, :] for top, left in self._origins()]
        stacked = ops.stack(tiles, axis=1)
        return ops.reshape(stacked, (-1, t, t, ops.shape(images)[-1]))

    def coverage(self) -> np.ndarray:
        """``[H, W]``: how many tiles cover each pixel (at least 1)."""
        counts = np.zeros(self.size, np.float32)
        for top, left in self._origins():
            counts[top : top + self.isize, left : left + self.isize] += 1
        return counts

    def stitch(self, tiles):
        """``[B * T, isize, isize, C] -> [B, H, W, C]``: tiles back in place, overlaps averaged."""
        t, (height, width) = self.isize, self.size
        channels = ops.shape(tiles)[-1]
        per_image = ops.reshape(tiles, (-1, self.count, t, t, channels))
        total = None
        for index, (top, left) in enumerate(self._origins()):
            padding = [[0, 0], [top, height - top - t], [left, width - left - t], [0, 0]]
            placed = ops.pad(per_image[:, index], padding)
            total = placed if total is None else total + placed
        return total / ops.convert_to_tensor(self.coverage()[None, :, :, None])
