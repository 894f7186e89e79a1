"""python -m benchmarks.thin_cracks MAGNETIC_TILE_VIEW OUT: large frames with thin real cracks.

A stand-in for inspection lines whose frames are large and elongated and whose
defects are hairline cracks a few pixels wide: squashed to the model's 64 pixels,
such a crack is a fraction of a pixel. Built from Magnetic Tile laid out by
``mvtec_view.py``, as an MVTec AD category (``train/good``, ``test/good``,
``test/crack``, ``ground_truth/crack``):

- every frame is one defect-free tile stretched to 512 x 1280 (width x height);
- a defective frame carries one real crack, cut from a Magnetic Tile crack image by
  its mask at its native size, at a random place; its mask marks the crack only.

230 training normals, 100 test normals and 57 cracks (take ten with
``data.labelled_defects=10``). Seeded: the same view gives the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

FRAME = (512, 1280)  # width, height
TRAIN_NORMALS, TEST_NORMALS = 230, 100


def _frame(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize(FRAME, Image.BILINEAR))


def _crack(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The crack's bounding box in its image, and its mask there."""
    image = np.asarray(Image.open(image_path).convert("L"))
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    rows, cols = np.nonzero(mask)
    box = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
    return image[box], mask[box]


def build(view: Path, out: Path, seed: int = 0) -> None:
    """Writes the category under ``out`` (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    goods = sorted((view / "train" / "good").iterdir()) + sorted((view / "test" / "good").iterdir())
    goods = [goods[i] for i in rng.permutation(len(goods))]
    cracks = sorted((view / "test" / "crack").iterdir())
    for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(goods[: TRAIN_NORMALS + TEST_NORMALS]):
        split = "train" if i < TRAIN_NORMALS else "test"
        Image.fromarray(_frame(path)).save(out / split / "good" / f"{i:04d}.png")
    hosts = goods[TRAIN_NORMALS + TEST_NORMALS :]
    for i, path in enumerate(cracks):
        frame = _frame(hosts[i]).copy()
        patch, mask = _crack(path, view / "ground_truth" / "crack" / f"{path.stem}_mask.png")
        height, width = mask.shape
        top = rng.integers(0, FRAME[1] - height)
        left = rng.integers(0, FRAME[0] - width)
        region = frame[top : top + height, left : left + width]
        region[mask] = patch[mask]
        full = np.zeros(frame.shape[:2], np.uint8)
        full[top : top + height, left : left + width][mask] = 255
        Image.fromarray(frame).save(out / "test" / "crack" / f"{i:04d}.png")
        Image.fromarray(full).save(out / "ground_truth" / "crack" / f"{i:04d}_mask.png")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
