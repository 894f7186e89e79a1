"""benchmarks.serving: one quick real measurement of every key, on a tiny config."""

import json

from benchmarks import serving
from tests.conftest import TINY_OVERRIDES


def test_main_prints_every_key_as_one_json_line_last(capsys, monkeypatch):
    monkeypatch.setattr(serving, "BATCH", 4)
    monkeypatch.setattr(serving, "PREDICT_IMAGES", 3)
    sets = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]
    assert serving.main(["--config", "configs/default.yaml", *sets, "--repeats", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for signature in ("serving_default", "serving_bytes"):
        for name in (signature, f"{signature}_no_checks"):  # with and without input checks
            p50 = result[f"latency_ms_b1_p50_{name}"]
            assert 0 < p50 <= result[f"latency_ms_b1_p95_{name}"]
            assert result[f"img_s_b4_{name}"] > 0
    assert result["predict_img_s"] > 0 and 0 < result["export_size_mb"] < 50
    assert result["predict_img_s_no_checks"] > 0
    assert result["predict_img_s_flagged"] > 0 and result["predict_img_s_flagged_no_overlays"] > 0
