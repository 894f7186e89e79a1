import sys

import numpy as np
import pytest
from PIL import Image

from components.sources import _cache, elpv


def _count(folder):
    return len(list(folder.glob("*.png")))


def test_small_limit_layout_and_split(tmp_path):
    pytest.importorskip("elpv_dataset")
    root = elpv.generate(tmp_path / "elpv", seed=0, limit=60)
    train, good, defect = (_count(root / d) for d in ("train/good", "test/good", "test/defect"))
    assert train + good + defect == 60
    assert good == round((train + good) * 0.2) and good > 0 and defect > 0
    assert sorted(p.name for p in (root / "test").iterdir()) == ["defect", "good"]
    assert not (root / "ground_truth").exists()
    image = Image.open(root / "test/defect/000.png")
    assert image.mode == "L" and image.size == (300, 300)
    assert (root / _cache.MARKER).is_file()


def test_missing_package_gives_install_hint(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import fail as if not installed.
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[elpv\]'"):
        elpv.generate(tmp_path / "elpv")
    assert list(tmp_path.iterdir()) == []


def test_subset_is_seeded_and_sorted():
    first = elpv._subset(2624, 50, seed=0)
    assert np.array_equal(first, elpv._subset(2624, 50, seed=0))
    assert not np.array_equal(first, elpv._subset(2624, 50, seed=1))
    assert np.all(np.diff(first) > 0) and len(first) == 50
    assert np.array_equal(elpv._subset(5, None, seed=0), np.arange(5))


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="limit"):
        elpv.generate(tmp_path / "elpv", limit=0)
    with pytest.raises(ValueError, match="test_fraction"):
        elpv.generate(tmp_path / "elpv", test_fraction=0)
