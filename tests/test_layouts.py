"""Tests for components.sources.layouts: layout detection and record listing."""

from pathlib import Path

import pytest
from PIL import Image

from components.sources.layouts import Record, detect_layout, list_records
from pipeline.core.errors import DataError


def _img(path: Path, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path)
    return path


def _mvtec(root: Path, ground_truth: bool = True) -> Path:
    _img(root / "train" / "good" / "000.png")
    _img(root / "train" / "good" / "001.png")
    _img(root / "test" / "good" / "000.png")
    _img(root / "test" / "crack" / "000.png")
    _img(root / "test" / "crack" / "001.png")
    if ground_truth:
        _img(root / "ground_truth" / "crack" / "000_mask.png")
    return root


def test_mvtec_records(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    assert detect_layout(root) == "mvtec"
    records = list_records(root)
    assert [(r.split, r.label, r.defect_type, r.path.name) for r in records] == [
        ("test", 0, "good", "000.png"),
        ("test", 1, "crack", "000.png"),
        ("test", 1, "crack", "001.png"),
        ("train", 0, "good", "000.png"),
        ("train", 0, "good", "001.png"),
    ]
    crack = [r for r in records if r.label == 1]
    assert crack[0].mask_path == root / "ground_truth" / "crack" / "000_mask.png"
    # Promised but missing: validation reports it.
    assert crack[1].mask_path is None and crack[1].masks_promised
    assert all(r.path.is_absolute() for r in records)


def test_mvtec_without_ground_truth_promises_no_masks(tmp_path):
    records = list_records(_mvtec(tmp_path / "m", ground_truth=False), "mvtec")
    assert not any(r.masks_promised or r.mask_path for r in records)


def test_ganomaly_records(tmp_path):
    root = tmp_path / "g"
    _img(root / "train" / "0.normal" / "a.png")
    _img(root / "test" / "0.normal" / "b.png")
    _img(root / "test" / "1.abnormal" / "c.png")
    assert detect_layout(root) == "ganomaly"
    assert list_records(root) == [
        Record(root / "test" / "0.normal" / "b.png", "test", 0, "good", None, False),
        Record(root / "test" / "1.abnormal" / "c.png", "test", 1, "abnormal", None, False),
        Record(root / "train" / "0.normal" / "a.png", "train", 0, "good", None, False),
    ]


def test_folders_records_with_masks_and_defect_subfolders(tmp_path):
    root = tmp_path / "f"
    _img(root / "normal" / "n1.png")
    _img(root / "abnormal" / "x.png")
    _img(root / "abnormal" / "scratch" / "s.jpg")
    _img(root / "masks" / "x.png")
    _img(root / "masks" / "s.png")  # same stem, different extension
    assert detect_layout(root) == "folders"
    records = list_records(root)
    assert {r.split for r in records} == {""}  # ingest assigns the split
    by_name = {r.path.name: r for r in records}
    assert by_name["n1.png"].label == 0 and by_name["n1.png"].defect_type == "good"
    assert by_name["x.png"].defect_type == "abnormal"
    assert by_name["x.png"].mask_path == root / "masks" / "x.png"
    assert by_name["s.jpg"].defect_type == "scratch"
    assert by_name["s.jpg"].mask_path == root / "masks" / "s.png"
    assert by_name["s.jpg"].masks_promised


def test_csv_records(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    _img(tmp_path / "masks" / "b.png")
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        "path,label,mask_path,split,defect_type\n"
        "imgs/a.png,normal,,train,\n"
        "imgs/b.png,1,masks/b.png,,hole\n",
        encoding="utf-8",
    )
    assert detect_layout(csv_path) == "csv"
    b, a = list_records(csv_path)  # sorted: split "" before "train"
    assert (a.path, a.split, a.label, a.defect_type) == (
        tmp_path / "imgs" / "a.png",
        "train",
        0,
        "good",
    )
    assert (b.split, b.label, b.defect_type, b.masks_promised) == ("", 1, "hole", True)
    assert b.mask_path == tmp_path / "masks" / "b.png"


def test_csv_good_defect_labels_without_optional_columns(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("path,label\nx.png,good\ny.png,DEFECT\n", encoding="utf-8")
    records = list_records(csv_path)
    assert [(r.label, r.defect_type, r.split, r.mask_path) for r in records] == [
        (0, "good", "", None),
        (1, "abnormal", "", None),
    ]


def test_csv_missing_column(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("file,label\nx.png,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.csv: missing column\(s\) path"):
        list_records(csv_path)


def test_csv_bad_label(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("path,label\nx.png,0\ny.png,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.csv:3: bad label 'maybe'"):
        list_records(csv_path)


def test_root_missing(tmp_path):
    with pytest.raises(DataError, match="nowhere: dataset root does not exist"):
        list_records(tmp_path / "nowhere")


def test_layout_not_recognised(tmp_path):
    _img(tmp_path / "pictures" / "a.png")
    with pytest.raises(DataError, match="layout not recognised"):
        detect_layout(tmp_path)


def test_empty_class_folder(tmp_path):
    root = _mvtec(tmp_path / "m")
    for path in (root / "train" / "good").iterdir():
        path.unlink()
    (root / "train" / "good" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(DataError, match=r"train/good: empty class folder"):
        list_records(root)


def test_other_files_listed_hidden_and_masks_skipped(tmp_path):
    root = _mvtec(tmp_path / "m")
    (root / "train" / "good" / "notes.txt").write_text("hi")
    (root / "train" / "good" / "002_mask.png").write_bytes(b"")
    (root / "train" / "good" / ".hidden.png").write_bytes(b"")
    names = [r.path.name for r in list_records(root) if r.split == "train"]
    assert names == ["000.png", "001.png", "notes.txt"]


def test_uppercase_extension_and_non_ascii_names(tmp_path):
    root = tmp_path / "données"
    _img(root / "normal" / "pièce_é.PNG")
    _img(root / "abnormal" / "缺陷" / "图像.JPG")
    records = list_records(root)
    assert [(r.path.name, r.defect_type) for r in records] == [
        ("pièce_é.PNG", "good"),
        ("图像.JPG", "缺陷"),
    ]
