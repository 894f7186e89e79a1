"""pipeline.score_table: one markdown row per (score.kind, pixel_norm) of a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import score_table
from pipeline.core import artifacts
from pipeline.core.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_YAML = REPO / "configs" / "default.yaml"


def _cells(line: str) -> list[str]:
    """The cells of one markdown row, without the outer pipes."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.strip() for cell in line[1:-1].split("|")]


def test_row_formats_three_decimals_and_none_as_na():
    result = {
        "image_auroc": 0.91234,
        "pixel_auroc": None,
        "aupro": 0.5,
        "f1": 0.66666,
        "f1_oracle": 1.0,
        "threshold": 3.2,  # not a column
    }
    line = score_table.row("ssim", False, result, {"crack": 0.8123, "blowhole": 0.95})
    assert line == (
        "| ssim | False | 0.912 | n/a | 0.500 | 0.667 | 1.000 | blowhole 0.950, crack 0.812 |"
    )
    # as many cells as the header has columns
    assert len(_cells(line)) == len(_cells(score_table.HEADER[0])) == 8
    assert _cells(score_table.row("ssim", False, result))[-1] == ""  # no masks, no types


def test_table_of_the_tiny_run(pipeline_run, capsys):
    config, run_path = pipeline_run
    # The tiny run's evaluate stage scored with residual maps, standardised per pixel.
    assert config.score.kind == "residual" and config.score.pixel_norm is True
    rows = score_table.score_table(config, run_path, kinds=("residual", "latent"))

    assert capsys.readouterr().out.splitlines() == rows  # printed as it goes
    assert rows[:2] == score_table.HEADER
    body = [_cells(line) for line in rows[2:]]
    assert [(cells[0], cells[1]) for cells in body] == [
        ("residual", "False"),
        ("residual", "True"),
        ("latent", "False"),
        ("latent", "True"),
    ]
    by_key = {(cells[0], cells[1] == "True"): cells for cells in body}

    # The configured combination repeats what the evaluate stage measured.
    metrics = json.loads((run_path / "evaluate" / "metrics.json").read_text())
    assert by_key[("residual", True)][2] == f"{metrics['image_auroc']:.3f}"
    per_type = json.loads((run_path / "evaluate" / "pixel_auroc_per_defect_type.json").read_text())
    assert per_type  # the tiny data has masks
    assert rows[3] == score_table.row("residual", True, metrics, per_type)

    # latent scores images by the latent distance but shows the residual map:
    # its pixel AUROC and AUPRO are those of residual with the same pixel_norm.
    for pixel_norm in (False, True):
        latent, residual = by_key[("latent", pixel_norm)], by_key[("residual", pixel_norm)]
        assert latent[3:5] == residual[3:5], pixel_norm
        assert latent[3] != "n/a"  # the tiny data has masks
    # ... and pixel_norm does change the maps
    assert by_key[("residual", False)][3:5] != by_key[("residual", True)][3:5]


def _run_main(capsys, monkeypatch, tmp_path, argv) -> tuple[int, list[str]]:
    monkeypatch.setattr(artifacts, "ARTIFACTS_ROOT", tmp_path)
    code = score_table.main(["--config", str(DEFAULT_YAML), *argv])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err.splitlines()


def test_main_without_a_trained_model_fails_in_one_line(capsys, monkeypatch, tmp_path):
    preprocessed = tmp_path / "half" / "preprocess"
    preprocessed.mkdir(parents=True)
    (preprocessed / artifacts.SUCCESS).write_text("done\n")
    code, err = _run_main(capsys, monkeypatch, tmp_path, ["--run", "half"])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("score_table: error: ")
    assert str(tmp_path / "half" / "train") in err[0] and "'train'" in err[0]


def test_main_names_the_first_missing_stage(capsys, monkeypatch, tmp_path):
    code, err = _run_main(capsys, monkeypatch, tmp_path, ["--run", "nothing"])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("score_table: error: ")
    assert str(tmp_path / "nothing" / "preprocess") in err[0]


def test_main_reports_a_bad_override(capsys, monkeypatch, tmp_path):
    code, err = _run_main(capsys, monkeypatch, tmp_path, ["--set", "score.kind=nope"])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("score_table: error: ")
    assert "score.kind" in err[0] and "nope" in err[0]


def test_kinds_the_model_cannot_score_are_refused_in_one_line(pipeline_run):
    config, run_path = pipeline_run  # the tiny run has no defect head
    with pytest.raises(PipelineError) as refused:
        score_table.score_table(config, run_path, kinds=["residual", "head", "blurry"])
    message = str(refused.value)
    assert message.startswith("--kinds head,blurry: this run's model scores only latent, ")
    assert "\n" not in message and "head_residual" not in message
