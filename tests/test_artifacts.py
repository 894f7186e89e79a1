"""pipeline.artifacts: stage outputs appear whole (with _SUCCESS) or not at all."""

import os
from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.artifacts import SUCCESS, require_stage, run_dir, stage_output
from pipeline.errors import PipelineError


def _complete_stage(run_path: Path, stage: str, files: dict) -> Path:
    with stage_output(run_path, stage) as out:
        for name, text in files.items():
            (out / name).write_text(text)
    return run_path / stage


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_stage_output_moves_into_place_with_success(tmp_path):
    run_path = tmp_path / "artifacts" / "demo"  # created on demand
    with stage_output(run_path, "ingest") as out:
        assert out.parent == run_path
        assert out.name.startswith(".")  # hidden: not taken for the stage's folder
        assert out != run_path / "ingest"
        assert not (run_path / "ingest").exists()
        assert _entries(out) == []
        (out / "data.txt").write_text("hello")
        assert not (out / SUCCESS).exists()  # only once the block succeeded
    final = run_path / "ingest"
    assert (final / "data.txt").read_text() == "hello"
    assert (final / SUCCESS).is_file()
    assert (final / SUCCESS).read_text().strip()  # a timestamp
    assert _entries(run_path) == ["ingest"]  # no temporary or old folder left


def test_stage_output_replaces_a_previous_complete_output(tmp_path):
    run_path = tmp_path / "demo"
    _complete_stage(run_path, "train", {"old.txt": "old"})
    _complete_stage(run_path, "train", {"new.txt": "new"})
    assert _entries(run_path / "train") == sorted(["new.txt", SUCCESS])
    assert _entries(run_path) == ["train"]


def test_stage_output_starts_empty_even_after_a_stale_temporary_folder(tmp_path):
    run_path = tmp_path / "demo"
    stale = run_path / f".train.tmp-{os.getpid()}"
    stale.mkdir(parents=True)
    (stale / "half.txt").write_text("from a crashed run")
    final = _complete_stage(run_path, "train", {"new.txt": "new"})
    assert _entries(final) == sorted(["new.txt", SUCCESS])
    assert _entries(run_path) == ["train"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_the_previous_output_untouched(tmp_path, error):
    run_path = tmp_path / "demo"
    final = _complete_stage(run_path, "preprocess", {"old.txt": "old"})
    success_before = (final / SUCCESS).read_text()
    mtime_before = (final / "old.txt").stat().st_mtime_ns
    with pytest.raises(type(error)):
        with stage_output(run_path, "preprocess") as out:
            (out / "half.txt").write_text("partial")
            raise error
    assert _entries(final) == sorted(["old.txt", SUCCESS])
    assert (final / "old.txt").read_text() == "old"
    assert (final / "old.txt").stat().st_mtime_ns == mtime_before
    assert (final / SUCCESS).read_text() == success_before
    assert _entries(run_path) == ["preprocess"]  # no temporary folder remains


def test_failure_without_a_previous_output_leaves_nothing(tmp_path):
    run_path = tmp_path / "demo"
    with pytest.raises(ValueError, match="bad"):
        with stage_output(run_path, "evaluate") as out:
            (out / "half.txt").write_text("partial")
            raise ValueError("bad")
    assert _entries(run_path) == []
    with pytest.raises(PipelineError):
        require_stage(run_path, "evaluate")


def test_require_stage_returns_a_finished_stage(tmp_path):
    run_path = tmp_path / "demo"
    final = _complete_stage(run_path, "ingest", {"a.txt": "a"})
    assert require_stage(run_path, "ingest") == final


@pytest.mark.parametrize("state", ["missing", "no_success"])
def test_require_stage_error_names_the_folder(tmp_path, state):
    run_path = tmp_path / "demo"
    if state == "no_success":  # e.g. a folder copied by hand, or half written
        (run_path / "preprocess").mkdir(parents=True)
        (run_path / "preprocess" / "train.tfrecord").write_text("")
    with pytest.raises(PipelineError) as caught:
        require_stage(run_path, "preprocess")
    message = str(caught.value)
    assert "\n" not in message
    assert str(run_path / "preprocess") in message
    assert "ganomaly preprocess" in message


def test_run_dir(tmp_path):
    assert run_dir("demo", tmp_path) == tmp_path / "demo"
    assert run_dir("demo") == artifacts.ARTIFACTS_ROOT / "demo"
