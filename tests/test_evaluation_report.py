"""components.evaluation_report on a fake test split with one false positive and one miss.

Scores: normals 0, 1, 2; crack 3 and 0.5; scratch 5. At threshold 1.5: tn 2, fp 1 (img2),
fn 1 (img4), tp 2. Crack against the normals: AUROC 4/6, AP 0.5 * 1 + 0.5 * 0.5 = 0.75.
"""

import re

import numpy as np
from PIL import Image

from components import evaluation_metrics as metrics
from components import evaluation_report, localize
from pipeline.core.config import EvaluateConfig
from tests.test_localize import make_test


def _report(tmp_path, **kwargs):
    test, mask_paths = make_test(tmp_path, masks=True)
    test["score"] = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 5.0])
    result = metrics.classification_report(test["label"], test["score"], 1.5)
    result.update(
        threshold=1.5,
        map_threshold=5.0,
        n_test_normal=3,
        n_test_abnormal=3,
        image_auroc=metrics.image_auroc(test["label"], test["score"]),
        image_ap=metrics.image_ap(test["label"], test["score"]),
    )
    per_type = {}
    for defect in ("crack", "scratch"):
        keep = (test["label"] == 0) | (test["defect_type"] == defect)
        per_type[defect] = metrics.image_auroc(test["label"][keep], test["score"][keep])
    regions = localize.localize(test, 5.0, EvaluateConfig(min_region_area=1))
    out = tmp_path / "out"
    out.mkdir()
    evaluation_report.write(
        result, per_type, "fixed", test, out, regions, mask_paths=mask_paths, **kwargs
    )
    return out, (out / "report.md").read_text()


def test_report_tables_hold_the_real_numbers(tmp_path):
    out, text = _report(tmp_path)
    assert "| normal | 2 | 1 |" in text and "| anomaly | 1 | 2 |" in text
    assert "| precision | 0.667 |" in text and "| recall | 0.667 |" in text
    # defect type | images | flagged | AUROC | AP
    assert "| crack | 2 | 1 | 0.667 | 0.750 |" in text
    assert "| scratch | 1 | 1 | 1.000 | 1.000 |" in text
    assert "| good (false alarms) | 3 | 1 | | |" in text
    # Regions: the planted block in each defective image, nothing on clean maps.
    assert "| good (normal) | 3 | 0 | 0% | 0 |" in text
    assert "| all defects | 3 | 3 | 100% | 3 |" in text
    assert "| crack | 2 | 2 | 100% | 2 |" in text
    assert len((out / "regions.csv").read_text().splitlines()) == 1 + 3
    for name in ("roc.png", "pr.png", "score_histogram.png"):
        assert (out / name).stat().st_size > 1000


def test_galleries_link_the_worst_errors(tmp_path):
    out, text = _report(tmp_path)
    fp_part, fn_part = text.split("## Worst false positives")[1].split("## Worst false negatives")
    assert re.findall(r"\]\((overlays/[^)]+)\)", fp_part) == ["overlays/0002_good_img2.png"]
    assert re.findall(r"\]\((overlays/[^)]+)\)", fn_part) == ["overlays/0004_crack_img4.png"]
    assert "score 2.00, 0 regions" in fp_part and "score 0.50, 1 regions" in fn_part
    for link in re.findall(r"\]\((overlays/[^)]+)\)", text):
        with Image.open(out / link) as img:
            assert img.format == "PNG"


def test_without_errors_the_closest_calls_are_shown(tmp_path):
    test = make_test(tmp_path)  # scores 0..5: a threshold of 2.5 makes no mistake
    result = metrics.classification_report(test["label"], test["score"], 2.5)
    result.update(threshold=2.5, n_test_normal=3, n_test_abnormal=3)
    regions = localize.localize(test, 5.0, EvaluateConfig())
    evaluation_report.write(result, {}, "fixed", test, tmp_path, regions, gallery_size=2)
    text = (tmp_path / "report.md").read_text()
    assert "No false positives; the highest-scoring normals." in text
    links = re.findall(r"\]\((overlays/[^)]+)\)", text)
    # Highest normals (2, 1), then lowest defects (3, 4); map_threshold absent is fine.
    assert links == [
        "overlays/0002_good_img2.png",
        "overlays/0001_good_img1.png",
        "overlays/0003_crack_img3.png",
        "overlays/0004_crack_img4.png",
    ]
    assert "Pixel threshold n/a" in text
    assert "| f1 | 1.000 |" in text


def test_gallery_size_zero_writes_no_overlays(tmp_path):
    out, text = _report(tmp_path, gallery_size=0)
    assert not (out / "overlays").exists()
    assert "Worst false" not in text and "| crack | 2 | 1 | 0.667 | 0.750 |" in text


def test_per_type_table_shows_pixel_auroc_when_given(tmp_path):
    _, text = _report(tmp_path, pixel_per_type={"crack": 0.9, "scratch": 0.8})
    assert "| crack | 2 | 1 | 0.667 | 0.750 | 0.900 |" in text
    assert "| scratch | 1 | 1 | 1.000 | 1.000 | 0.800 |" in text
