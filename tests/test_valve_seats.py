import numpy as np
import pytest
from PIL import Image

from components.sources import _cache, valve_seats
from components.sources.valve_seats import DEFECT_TYPES, generate, render


def _png_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("vs") / "valve", n_train=4, n_test=2, size=64, seed=3)


def test_layout_and_counts(small):
    assert len(list((small / "train/good").glob("*.png"))) == 4
    assert sorted(p.name for p in (small / "test").iterdir()) == sorted(("good", *DEFECT_TYPES))
    for cls in ("good", *DEFECT_TYPES):
        assert sorted(p.name for p in (small / "test" / cls).iterdir()) == ["000.png", "001.png"]
    for defect in DEFECT_TYPES:
        masks = sorted(p.name for p in (small / "ground_truth" / defect).iterdir())
        assert masks == ["000_mask.png", "001_mask.png"]
    assert not (small / "ground_truth" / "good").exists()
    image = Image.open(small / "test/pit/000.png")
    assert image.mode == "L" and image.size == (64, 64)


def test_masks_binary_nonempty_and_on_the_image(small):
    for defect in DEFECT_TYPES:
        for path in (small / "ground_truth" / defect).iterdir():
            mask = np.asarray(Image.open(path))
            assert mask.shape == (64, 64)
            assert set(np.unique(mask)) <= {0, 255}
            assert (mask == 255).sum() >= 3, path
            # Defects lie on the seat face, never touching the image border.
            assert not mask[[0, -1], :].any() and not mask[:, [0, -1]].any()


def test_same_seed_identical_bytes_and_other_seed_differs(small, tmp_path):
    again = generate(tmp_path / "again", n_train=4, n_test=2, size=64, seed=3)
    other = generate(tmp_path / "other", n_train=4, n_test=2, size=64, seed=4)
    assert _png_bytes(again) == _png_bytes(small)
    assert _png_bytes(other).keys() == _png_bytes(small).keys()
    assert _png_bytes(other) != _png_bytes(small)


def test_images_are_independent_of_how_many_are_generated(small, tmp_path):
    bigger = generate(tmp_path / "bigger", n_train=5, n_test=3, size=64, seed=3)
    assert (bigger / "test/chip/001.png").read_bytes() == (small / "test/chip/001.png").read_bytes()


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_marks_exactly_where_the_defect_changed_the_image(defect):
    for seed in range(5):
        good, empty = render(np.random.default_rng(seed), 64, None)
        bad, mask = render(np.random.default_rng(seed), 64, defect)
        assert not empty.any()
        diff = np.abs(bad.astype(int) - good.astype(int))
        inside, outside = diff[mask == 255], diff[mask == 0]
        # Same rng state gives the same seat and noise, so only the defect differs.
        assert inside.mean() > valve_seats.NOTICEABLE
        assert outside.max() <= valve_seats.NOTICEABLE + 1


def test_good_renderings_vary_but_look_alike():
    images = np.stack([render(np.random.default_rng(s), 64, None)[0] for s in range(6)])
    assert len({im.tobytes() for im in images}) == 6
    centre, corner = images[:, 32, 32].astype(float), images[:, 2, 2].astype(float)
    ring = images[:, 32, 32 + 20].astype(float)  # radius 20 is mid-face at size 64
    assert (ring > centre + 80).all() and (ring > corner + 80).all()


def test_unknown_defect_rejected():
    with pytest.raises(ValueError, match="dent"):
        render(np.random.default_rng(0), 64, "dent")


def test_marker_skips_regeneration_and_other_params_regenerate(tmp_path):
    root = generate(tmp_path / "v", n_train=2, n_test=1, size=32, seed=0)
    assert (root / _cache.MARKER).is_file()
    sentinel = root / "train/good/000.png"
    sentinel.write_bytes(b"touched")
    generate(root, n_train=2, n_test=1, size=32, seed=0)
    assert sentinel.read_bytes() == b"touched"
    generate(root, n_train=2, n_test=1, size=32, seed=1)
    assert sentinel.read_bytes() != b"touched"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = valve_seats.save_png

    def failing_save(path, image):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(path, image)

    monkeypatch.setattr(valve_seats, "save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "v", n_train=3, n_test=1, size=32)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_regeneration_keeps_the_previous_complete_folder(tmp_path, monkeypatch):
    root = generate(tmp_path / "v", n_train=2, n_test=1, size=32, seed=0)
    before = _png_bytes(root)
    monkeypatch.setattr(valve_seats, "save_png", lambda path, image: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        generate(root, n_train=2, n_test=1, size=32, seed=1)
    assert _png_bytes(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="16"):
        generate(tmp_path / "v", n_train=1, n_test=1, size=16)
    with pytest.raises(ValueError, match="0"):
        generate(tmp_path / "v", n_train=0, n_test=1)
