import json

import pytest

from benchmarks.stages import by_size_and_cache, format_table, generate, run_bench, run_train_memory
from models.decoding import FORMATS, decode_bytes, image_format

pytestmark = pytest.mark.slow


def test_run_bench_measures_ingest_and_preprocess(tmp_path):
    rows = run_bench([20], side=96, isize=32, workdir=tmp_path)

    assert [row["stage"] for row in rows] == ["ingest", "preprocess"]
    for row in rows:
        assert row["images"] == 20
        assert row["seconds"] > 0
        assert row["images_per_s"] > 0
        assert row["peak_rss_mib"] > 10
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    root = tmp_path / "data" / "mvtec-n20-s96"
    assert len(list(root.glob("t*/*/*.png"))) == 20
    assert len(list(root.glob("ground_truth/*/*_mask.png"))) >= 1
    assert not (tmp_path / "artifacts" / "bench-n20-s96-i32").exists()  # removed without keep
    assert "preprocess" in format_table(rows)


def test_generate_writes_jpeg_images_beside_png_masks(tmp_path):
    root = generate(tmp_path / "jpeg", 12, 64, "jpeg")

    images = sorted(root.glob("t*/*/*"))
    assert len(images) == 12 and {path.suffix for path in images} == {".jpg"}
    data = images[0].read_bytes()
    assert FORMATS[int(image_format(data))] == "JPEG"
    assert decode_bytes(data, 1).shape == (64, 64, 1)
    assert list(root.glob("ground_truth/*/*_mask.png"))


def test_run_train_memory_measures_training_peak_memory(tmp_path):
    rows = run_train_memory((40,), isize=32, caches=("none",), workdir=tmp_path)

    assert [(row["images"], row["cache"]) for row in rows] == [(40, "none")]
    assert rows[0]["seconds"] > 0
    assert rows[0]["peak_rss_mib"] > 100  # TensorFlow and a model were really loaded
    assert json.loads((tmp_path / "train_memory.json").read_text()) == rows
    assert not (tmp_path / "artifacts" / "bench-train-n40-none").exists()
    assert by_size_and_cache(rows) == {"40": {"none": rows[0]["peak_rss_mib"]}}
