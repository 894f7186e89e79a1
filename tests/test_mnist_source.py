import numpy as np
import pytest
from PIL import Image

from components.sources import _cache, mnist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return mnist.generate(tmp_path_factory.mktemp("mnist") / "mnist-3", digit=3, seed=0)


def _count(folder):
    return len(list(folder.glob("*.png")))


def test_layout_and_counts(three):
    assert _count(three / "train/good") == 3600
    assert _count(three / "test/good") == 900
    assert _count(three / "test/digit_3") == 500
    assert sorted(p.name for p in (three / "test").iterdir()) == ["digit_3", "good"]
    assert not (three / "ground_truth").exists()
    image = Image.open(three / "test/digit_3/000.png")
    assert image.mode == "L" and image.size == (28, 28)


def test_anomalous_digit_is_absent_from_the_normal_splits(three):
    images, labels = mnist._load()
    threes = {im.tobytes() for im in images[labels == 3]}
    for split in ("train/good", "test/good"):
        for path in sorted((three / split).glob("*.png"))[:300]:
            assert np.asarray(Image.open(path)).tobytes() not in threes


def test_split_is_disjoint(three):
    def pixels(split):
        return {np.asarray(Image.open(p)).tobytes() for p in (three / split).glob("*.png")}

    assert not pixels("train/good") & pixels("test/good")


def test_split_is_seeded():
    train, test = _cache.split_normals(4500, 0.2, seed=0)
    assert len(train) == 3600 and len(test) == 900
    assert sorted({*train, *test}) == list(range(4500))
    again, other = _cache.split_normals(4500, 0.2, seed=0), _cache.split_normals(4500, 0.2, seed=1)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)


def test_marker_skips_regeneration(three):
    assert (three / _cache.MARKER).is_file()
    before = (three / "train/good/0000.png").stat().st_mtime_ns
    mnist.generate(three, digit=3, seed=0)
    assert (three / "train/good/0000.png").stat().st_mtime_ns == before


@pytest.mark.parametrize("digit", [10, -1, 2.5, "3", True])
def test_rejects_digit_outside_0_to_9(tmp_path, digit):
    with pytest.raises(ValueError, match=repr(digit).replace(".", r"\.")):
        mnist.generate(tmp_path / "m", digit=digit)
    assert not (tmp_path / "m").exists()


def test_rejects_bad_test_fraction(tmp_path):
    with pytest.raises(ValueError, match="1.5"):
        mnist.generate(tmp_path / "m", digit=0, test_fraction=1.5)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "write_pngs", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        mnist.generate(tmp_path / "m", digit=0)
    assert list(tmp_path.iterdir()) == []
