"""pipeline.core.artifacts: stage outputs appear whole, as declared, or not at all."""

import os
from pathlib import Path

import pytest

from pipeline.core import artifacts
from pipeline.core.artifacts import SUCCESS, require_stage, run_dir, stage_output
from pipeline.core.errors import PipelineError

# What the stage table declares for preprocess: preprocess.json, *.tfrecord, input statistics.
STATISTICS = {"input_statistics.csv": "", "input_statistics.json": "{}"}
DECLARED = {"preprocess.json": "{}", "train-00000.tfrecord": "", **STATISTICS}


def _complete_stage(run_path: Path, stage: str, files: dict) -> Path:
    with stage_output(run_path, stage) as out:
        for name, text in files.items():
            (out / name).write_text(text)
    return run_path / stage


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_stage_output_moves_into_place_with_success(tmp_path):
    run_path = tmp_path / "artifacts" / "demo"  # created on demand
    with stage_output(run_path, "preprocess") as out:
        assert out.parent == run_path
        assert out.name.startswith(".")  # hidden: not taken for the stage's folder
        assert out != run_path / "preprocess"
        assert not (run_path / "preprocess").exists()
        assert _entries(out) == []
        for name, text in DECLARED.items():
            (out / name).write_text(text)
        assert not (out / SUCCESS).exists()  # only once the block succeeded
    final = run_path / "preprocess"
    assert (final / "preprocess.json").read_text() == "{}"
    assert (final / SUCCESS).is_file()
    assert (final / SUCCESS).read_text().strip()  # a timestamp
    assert _entries(run_path) == ["preprocess"]  # no temporary or old folder left


def test_stage_output_replaces_a_previous_complete_output(tmp_path):
    run_path = tmp_path / "demo"
    _complete_stage(run_path, "preprocess", {**DECLARED, "old.tfrecord": "old"})
    _complete_stage(run_path, "preprocess", DECLARED)
    assert _entries(run_path / "preprocess") == sorted([*DECLARED, SUCCESS])
    assert _entries(run_path) == ["preprocess"]


def test_stage_output_starts_empty_even_after_a_stale_temporary_folder(tmp_path):
    run_path = tmp_path / "demo"
    stale = run_path / f".preprocess.tmp-{os.getpid()}"
    stale.mkdir(parents=True)
    (stale / "half.tfrecord").write_text("from a crashed run")
    final = _complete_stage(run_path, "preprocess", DECLARED)
    assert _entries(final) == sorted([*DECLARED, SUCCESS])
    assert _entries(run_path) == ["preprocess"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_the_previous_output_untouched(tmp_path, error):
    run_path = tmp_path / "demo"
    final = _complete_stage(run_path, "preprocess", {**DECLARED, "old.tfrecord": "old"})
    success_before = (final / SUCCESS).read_text()
    mtime_before = (final / "old.tfrecord").stat().st_mtime_ns
    with pytest.raises(type(error)):
        with stage_output(run_path, "preprocess") as out:
            (out / "half.tfrecord").write_text("partial")
            raise error
    assert _entries(final) == sorted([*DECLARED, "old.tfrecord", SUCCESS])
    assert (final / "old.tfrecord").read_text() == "old"
    assert (final / "old.tfrecord").stat().st_mtime_ns == mtime_before
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
    final = _complete_stage(run_path, "preprocess", DECLARED)
    assert require_stage(run_path, "preprocess") == final


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


@pytest.mark.parametrize(
    "files, complaint",
    [
        ({**DECLARED, "notes.txt": "x"}, r"undeclared \['notes.txt'\]"),
        ({"train-00000.tfrecord": "", **STATISTICS}, r"left out \['preprocess.json'\]"),
    ],
)
def test_an_undeclared_or_missing_output_is_never_moved_into_place(tmp_path, files, complaint):
    run_path = tmp_path / "demo"
    previous = _complete_stage(run_path, "preprocess", DECLARED)
    with pytest.raises(RuntimeError, match=complaint):
        _complete_stage(run_path, "preprocess", files)
    assert _entries(previous) == sorted([*DECLARED, SUCCESS])  # the old output stays
    assert _entries(run_path) == ["preprocess"]


def test_only_stages_of_the_table_have_outputs(tmp_path):
    with pytest.raises(KeyError):
        require_stage(tmp_path, "nonsense")
