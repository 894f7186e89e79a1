"""benchmarks.model: FLOPs counted by hand, and one quick real measurement of every key."""

import json

import pytest

from benchmarks import model as model_bench
from models.ganomaly import GANomaly

SMALL = {"nz": 8, "ngf": 8, "ndf": 8}


def test_conv_flops_match_a_hand_count():
    model = GANomaly(isize=32, channels=1, options=SMALL)
    # Encoder 32x32x1: conv 1->8 to 16x16 (2*16*16*1*8*16 = 65,536), 8->16 to 8x8
    # (262,144), 16->32 to 4x4 (262,144), 32->nz 8 to 1x1 (8,192): 598,016. The decoder
    # mirrors it with transposed convolutions (counted on their inputs): 598,016 again.
    assert model_bench._conv_flops(model.generator) == 3 * 598_016
    # The discriminator: the encoder's first three convolutions and a 32->1 classifier.
    assert model_bench._conv_flops(model.discriminator) == 65_536 + 2 * 262_144 + 1_024


def test_training_flops_are_three_generator_and_six_discriminator_passes(monkeypatch):
    monkeypatch.setattr(model_bench, "NETWORKS", SMALL)
    expected = (3 * 3 * 598_016 + 6 * (65_536 + 2 * 262_144 + 1_024)) / 1e9
    assert model_bench.train_gflop_per_img(32, 1) == pytest.approx(expected)


@pytest.mark.slow
def test_main_prints_every_key_as_one_json_line_last(monkeypatch, capsys):
    monkeypatch.setattr(model_bench, "NETWORKS", SMALL)
    monkeypatch.setattr(model_bench, "CONFIGS", {"32x1": (32, 1), "64x3": (32, 3)})
    monkeypatch.setattr(model_bench, "BATCH", 8)  # every key measured, not its speed
    monkeypatch.setattr(model_bench, "WARMUP", 1)
    assert model_bench.main(["--steps", "2", "--rounds", "1", "--threads", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "train_img_s_32x1",
        "train_img_s_64x3",
        "infer_img_s_32x1",
        "infer_img_s_64x3",
        "latency_ms_b1_64x3",
        "train_gflop_per_img_64x3",
        "achieved_gflop_s_64x3",
        "cpu_matmul_gflop_s",
    ):
        assert result[key] > 0, key
    assert result["achieved_gflop_s_64x3"] == pytest.approx(
        result["train_gflop_per_img_64x3"] * result["train_img_s_64x3"], rel=0.01
    )
