"""Atomic, parameter-keyed writing of a generated dataset folder.

    from components.sources._cache import write_once

    def generate(root, n, seed=0):
        return write_once(root, {"source": "x", "n": n, "seed": seed}, lambda tmp: _fill(tmp))

The built-in sources build their MVTec-style folder in a hidden temporary
sibling and rename it into place only once everything (the ``.complete``
marker last) is written, so an interrupted run never leaves a half-written
dataset that a later run would mistake for a finished one. A folder whose
marker records the same parameters is reused as is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".complete"


def _marker_text(params: dict) -> str:
    # Sorted keys make the text, and therefore the comparison, independent of dict order.
    return json.dumps(params, sort_keys=True)


def is_complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished dataset generated with exactly ``params``."""
    marker = Path(root) / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(params)


def write_once(root: Path, params: dict, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a temporary sibling of ``root`` and rename it into place.

    Args:
        root: Final dataset folder.
        params: JSON-serialisable parameters that fully determine the content.
        build: Writes the dataset into the folder it is given.

    Returns:
        ``root``, either freshly written or reused because its marker matched.

    """
    root = Path(root)
    if is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # A sibling (same filesystem) keeps the final rename atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(_marker_text(params))
        _replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _replace(tmp: Path, root: Path) -> None:
    # A stale or differently-parameterised folder is moved aside first because
    # rename cannot overwrite a non-empty directory.
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        root.rename(old / "data")
        tmp.rename(root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(root)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a 2-D uint8 array as a grayscale PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)


def check_test_fraction(test_fraction: float) -> None:
    """Reject a held-out share that would leave the train or test split empty."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")


def split_normals(count: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(count)`` at random into sorted (train, test) index arrays.

    Args:
        count: Number of normal samples.
        test_fraction: Share held out for testing, strictly between 0 and 1.
        seed: Seed of the shuffle; equal arguments give equal splits.

    Returns:
        (train indices, test indices), each in ascending order.

    """
    check_test_fraction(test_fraction)
    order = np.random.default_rng(seed).permutation(count)
    n_test = round(count * test_fraction)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def write_pngs(folder: Path, images: np.ndarray, suffix: str = "") -> None:
    """Write each image as ``NNN<suffix>.png``, zero-padded to at least three digits."""
    digits = max(3, len(str(len(images) - 1)))
    for index, image in enumerate(images):
        save_png(folder / f"{index:0{digits}d}{suffix}.png", image)
