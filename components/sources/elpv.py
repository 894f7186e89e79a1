"""Built-in dataset ``elpv``: electroluminescence images of solar cells (optional extra).

    pip install '.[elpv]'
    from components.sources.elpv import generate
    root = generate(Path("data/elpv"), seed=0)

The elpv-dataset package bundles 2,624 300x300 grayscale cell images, each with
an expert defect probability (0, 1/3, 2/3 or 1). Cells with probability 0 are
normal and are split at random, seeded, into ``train/good`` (80%) and
``test/good`` (20%); all others go to ``test/defect``. There are no masks. The
folder is written atomically and reused when generated before with the same
parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.sources._cache import (
    check_test_fraction,
    split_normals,
    write_once,
    write_pngs,
)

SOURCE = "elpv"
VERSION = 1
INSTALL_HINT = "the elpv dataset needs the optional package elpv-dataset: pip install '.[elpv]'"


def _load() -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 images [n, 300, 300], defect probabilities [n])."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    images, probabilities, _types = load_dataset()
    return images, probabilities


def _subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    # A seeded random subset rather than the first cells, so that a small limit
    # still holds both normal and defective cells.
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def generate(
    root: Path, seed: int = 0, test_fraction: float = 0.2, limit: int | None = None
) -> Path:
    """Write the elpv category into root and return root.

    Args:
        root: Category folder to create (replaced unless already complete with these parameters).
        seed: Seed of the train/test split of the normal cells (and of the subset).
        test_fraction: Share of the normal cells held out in ``test/good``.
        limit: Use only this many cells, picked at random; None for all 2,624.

    Returns:
        ``root``.

    Raises:
        ImportError: elpv-dataset is not installed.
        ValueError: ``test_fraction`` is not between 0 and 1, or ``limit`` is below 1.

    """
    check_test_fraction(test_fraction)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    params = {
        "source": SOURCE,
        "version": VERSION,
        "seed": seed,
        "test_fraction": test_fraction,
        "limit": limit,
    }

    def build(tmp: Path) -> None:
        images, probabilities = _load()
        keep = _subset(len(images), limit, seed)
        images, probabilities = images[keep], probabilities[keep]
        normal = images[probabilities == 0]
        train, test = split_normals(len(normal), test_fraction, seed)
        write_pngs(tmp / "train" / "good", normal[train])
        write_pngs(tmp / "test" / "good", normal[test])
        write_pngs(tmp / "test" / "defect", images[probabilities > 0])

    return write_once(Path(root), params, build)
