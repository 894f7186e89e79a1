"""benchmarks.mnist_table: the per-digit table of the MNIST benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import mnist_table

# digit -> (image_auroc, image_ap, f1); digits 1, 2, 4, 5, 6, 8 have no run.
RESULTS = {
    7: (0.8, 0.75, 0.5),
    0: (0.9126, 0.5, 0.33333),
    3: (0.6, 0.123456, 1.0),
    9: (0.7001, 0.9999, 0.0),
}


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    for digit, (auroc, ap, f1) in RESULTS.items():
        evaluate = root / f"mnist-{digit}" / "evaluate"
        evaluate.mkdir(parents=True)
        metrics = {"image_auroc": auroc, "image_ap": ap, "f1": f1, "threshold": 0.1}
        (evaluate / "metrics.json").write_text(json.dumps(metrics))
    # neither a finished run of digit 5 nor another dataset's run counts
    (root / "mnist-5" / "train").mkdir(parents=True)
    (root / "mvtec-bottle" / "evaluate").mkdir(parents=True)
    (root / "mvtec-bottle" / "evaluate" / "metrics.json").write_text(
        json.dumps({"image_auroc": 0.0, "image_ap": 0.0, "f1": 0.0})
    )
    return root


EXPECTED = [
    "| anomalous digit | image AUROC | image AP | F1 |",
    "|---|---|---|---|",
    "| 0 | 0.913 | 0.500 | 0.333 |",
    "| 3 | 0.600 | 0.123 | 1.000 |",
    "| 7 | 0.800 | 0.750 | 0.500 |",
    "| 9 | 0.700 | 1.000 | 0.000 |",
    # mean AUROC of the four runs: (0.9126 + 0.6 + 0.8 + 0.7001) / 4 = 3.0127 / 4 = 0.753175
    "| mean | 0.753 | | |",
]


def test_table_rows_in_digit_order_with_the_mean(tmp_path):
    assert mnist_table.table(_root(tmp_path)) == EXPECTED


def test_table_of_one_run_has_its_auroc_as_mean(tmp_path):
    evaluate = tmp_path / "mnist-4" / "evaluate"
    evaluate.mkdir(parents=True)
    (evaluate / "metrics.json").write_text(
        json.dumps({"image_auroc": 0.25, "image_ap": 0.5, "f1": 0.125})
    )
    assert mnist_table.table(tmp_path)[2:] == [
        "| 4 | 0.250 | 0.500 | 0.125 |",
        "| mean | 0.250 | | |",
    ]


def test_main_prints_the_table(tmp_path, capsys):
    assert mnist_table.main([str(_root(tmp_path))]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == EXPECTED
    assert captured.err == ""


def test_main_without_runs_fails_with_a_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mnist_table.main([str(empty)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"no mnist-<digit> runs under {empty}; run `make benchmark`"
    ]
