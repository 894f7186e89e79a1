"""benchmarks.thin_cracks: large frames with one real crack pasted, laid out as MVTec AD."""

import numpy as np
from PIL import Image

from benchmarks import thin_cracks


def _view(root):
    """A tiny Magnetic Tile view: textured defect-free tiles and two masked cracks."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        (root / split / "good").mkdir(parents=True)
        for i in range(4):
            texture = rng.integers(100, 160, (60, 80), dtype=np.uint8)
            Image.fromarray(texture).save(root / split / "good" / f"{split}{i}.png")
    (root / "test" / "crack").mkdir(parents=True)
    (root / "ground_truth" / "crack").mkdir(parents=True)
    for i in range(2):
        image = np.full((50, 70), 130, np.uint8)
        mask = np.zeros((50, 70), np.uint8)
        mask[10:40, 30 + i : 32 + i] = 255  # a 2-pixel-wide line, 30 long
        image[mask > 0] = 20
        Image.fromarray(image).save(root / "test" / "crack" / f"c{i}.png")
        Image.fromarray(mask).save(root / "ground_truth" / "crack" / f"c{i}_mask.png")


def test_each_crack_lands_whole_in_a_large_frame_and_its_mask_marks_it_alone(tmp_path):
    _view(tmp_path / "view")
    out = tmp_path / "thin"
    thin_cracks.build(tmp_path / "view", out, scale=2.0, normals=(3, 2))
    assert len(list((out / "train" / "good").iterdir())) == 3
    assert len(list((out / "test" / "good").iterdir())) == 2
    for i in range(2):
        frame = np.asarray(Image.open(out / "test" / "crack" / f"{i:04d}.png"))
        mask = np.asarray(Image.open(out / "ground_truth" / "crack" / f"{i:04d}_mask.png")) > 0
        assert frame.shape == mask.shape == (1280, 512)
        # The line doubled: 4 wide (give or take the resampled edge), 60 long.
        rows, cols = np.nonzero(mask)
        assert np.ptp(rows) + 1 in (59, 60, 61) and np.ptp(cols) + 1 in (3, 4, 5)
        # The crack's dark pixels were pasted under the mask, the host's texture elsewhere.
        assert frame[mask].mean() < 60 and frame[~mask].min() >= 90
