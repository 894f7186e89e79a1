"""pipeline.cli: `ganomaly resolve` stamps and one-line errors, in-process and installed."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.core import artifacts
from pipeline.core.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "default.yaml"
RUN = "demo"
OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09: any rewrite moves the mtime off it
STAGES = ("ingest", "preprocess", "train", "evaluate", "export")
SECTIONS = {
    "ingest": ["data"],
    "preprocess": [
        "data",
        "preprocess",
        "model.head_isize",
        "model.head_aspect",
        "model.head_size",
    ],
    "train": ["data", "preprocess", "model", "train"],
    "evaluate": ["data", "preprocess", "model", "train", "score", "threshold", "evaluate"],
    "export": list(Config.__annotations__),
}
# TensorFlow's C++ start-up logging, written to fd 2 before any Python code can
# silence it (TF_CPP_MIN_LOG_LEVEL does not cover it).
TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWE]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions)"
)


def _script() -> str:
    script = Path(sys.executable).with_name("ganomaly")
    if script.is_file():
        return str(script)
    found = shutil.which("ganomaly")
    assert found, "the `ganomaly` console script is not installed"
    return found


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> str:
    """One sqlite store for this module's `train` runs (its tables are made once)."""
    return f"sqlite:///{tmp_path_factory.mktemp('cli-mlflow')}/mlflow.db"


def _subprocess(tmp_path: Path, *args: str, mlflow_uri: str | None = None):
    env = {
        **os.environ,
        "GANOMALY_ARTIFACTS": str(tmp_path / "artifacts"),
        "MLFLOW_TRACKING_URI": mlflow_uri or f"sqlite:///{tmp_path}/mlflow.db",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [_script(), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs main() in tmp_path with the default, relative artifacts root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(artifacts, "ARTIFACTS_ROOT", Path("artifacts"))
    return tmp_path


def _resolve_in_process(*overrides: str) -> int:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return cli.main(["resolve", "--config", str(CONFIG), "--run", RUN, *sets])


def _resolve_subprocess(tmp_path: Path, *overrides: str) -> int:
    sets = [arg for o in overrides for arg in ("--set", o)]
    done = _subprocess(tmp_path, "resolve", "--config", str(CONFIG), "--run", RUN, *sets)
    assert done.stderr == "", done.stderr
    return done.returncode


def _written(run_path: Path) -> dict[str, Path]:
    files = {"config": run_path / "config.yaml"}
    files.update({stage: run_path / ".stamps" / f"{stage}.yaml" for stage in STAGES})
    return files


def _check_resolve_and_rewrites(tmp_path: Path, resolve) -> None:
    run_path = tmp_path / "artifacts" / RUN
    assert resolve() == 0
    files = _written(run_path)
    assert yaml.safe_load(files["config"].read_text()) == load_config(CONFIG).to_dict()
    full = load_config(CONFIG).to_dict()
    for stage in STAGES:
        stamp = yaml.safe_load(files[stage].read_text())
        assert list(stamp) == SECTIONS[stage], stage
        assert stamp == {s: cli._part(full, s) for s in SECTIONS[stage]}
    assert not [p for p in run_path.rglob("*") if p.name.endswith(".tmp")]

    # the same resolve again: nothing is rewritten
    for path in files.values():
        os.utime(path, ns=(OLD_NS, OLD_NS))
    assert resolve() == 0
    assert {k: p.stat().st_mtime_ns for k, p in files.items()} == dict.fromkeys(files, OLD_NS)

    # train.epochs changes what train, evaluate and export depend on, only
    assert resolve("train.epochs=2") == 0
    changed = {k for k, p in files.items() if p.stat().st_mtime_ns != OLD_NS}
    assert changed == {"config", "train", "evaluate", "export"}
    for key in changed:
        assert yaml.safe_load(files[key].read_text())["train"]["epochs"] == 2
    assert yaml.safe_load(files["ingest"].read_text()) == {"data": full["data"]}


def test_resolve_in_process_writes_config_and_stamps_only_on_change(in_tmp):
    _check_resolve_and_rewrites(in_tmp, _resolve_in_process)


def test_resolve_console_script_writes_config_and_stamps_only_on_change(tmp_path):
    _check_resolve_and_rewrites(tmp_path, lambda *o: _resolve_subprocess(tmp_path, *o))


def test_unknown_set_key_in_process_is_one_line_exit_2(in_tmp, capsys):
    assert _resolve_in_process("foo.bar=1") == 2
    captured = capsys.readouterr()
    assert captured.err == "ganomaly resolve: error: unknown config key 'foo.bar'\n"
    assert captured.out == ""
    assert not (in_tmp / "artifacts").exists()


def test_unknown_set_key_console_script_is_one_line_exit_2(tmp_path):
    done = _subprocess(
        tmp_path, "resolve", "--config", str(CONFIG), "--run", RUN, "--set", "foo.bar=1"
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ganomaly resolve: error:")
    assert "'foo.bar'" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "artifacts").exists()


def test_bad_config_file_console_script_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope.yaml"
    done = _subprocess(tmp_path, "resolve", "--config", str(missing))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"ganomaly resolve: error: {missing}: ")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not TF_NOISE.match(line)]


def test_train_without_preprocess_in_process_names_the_missing_stage(
    in_tmp, monkeypatch, capsys, mlflow_db
):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    try:
        code = cli.main(["train", "--config", str(CONFIG), "--run", RUN])
    finally:
        mlflow.set_tracking_uri(None)  # the env (restored by monkeypatch) decides again
    assert code == 2
    err = capsys.readouterr().err
    missing = Path("artifacts") / RUN / "preprocess"
    assert err == (
        f"ganomaly train: error: {missing}: no finished 'preprocess' stage here; "
        "run `ganomaly preprocess` first\n"
    )
    assert not (in_tmp / "artifacts" / RUN / "train").exists()


def test_train_without_preprocess_console_script_names_the_missing_stage(tmp_path, mlflow_db):
    args = ("train", "--config", str(CONFIG), "--run", RUN)
    done = _subprocess(tmp_path, *args, mlflow_uri=mlflow_db)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = _error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    missing = tmp_path / "artifacts" / RUN / "preprocess"
    assert lines[0].startswith(f"ganomaly train: error: {missing}: ")
    assert "'preprocess'" in lines[0]
    run_path = tmp_path / "artifacts" / RUN
    assert not (run_path / "train").exists()
    # Nothing is written: the check runs before the MLflow run is opened.
    assert not run_path.exists() or not [p for p in run_path.iterdir() if ".train." in p.name]


def _make_dry_run(tmp_path: Path, *variables: str) -> list[str]:
    """The stage commands `make -n export` would run for the run folder under tmp_path."""
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO), "--no-print-directory", "export", "RUN=dry",
         f"ART={tmp_path / 'artifacts' / 'dry'}", *variables],
        env={**os.environ, "GANOMALY_ARTIFACTS": str(tmp_path / "artifacts")},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    commands = [line.split()[1] for line in done.stdout.splitlines() if "bin/ganomaly" in line]
    return [c for c in commands if c != "resolve"]


@pytest.mark.skipif(not (REPO / ".venv" / ".installed").is_file(), reason="needs `make setup`")
def test_make_dry_run_lists_only_the_stages_out_of_date_and_writes_nothing(tmp_path):
    run_path = tmp_path / "artifacts" / "dry"
    assert _make_dry_run(tmp_path) == list(cli.STAGES)  # nothing has run yet
    cli.resolve(load_config(REPO / "configs" / "default.yaml"), run_path)
    for age, stage in enumerate(cli.STAGES):  # finished in order, after the stamps
        (run_path / stage).mkdir()
        (run_path / stage / artifacts.SUCCESS).write_text("")
        os.utime(run_path / stage / artifacts.SUCCESS, (time.time() + age + 1,) * 2)
    stamps = {p: p.read_bytes() for p in (run_path / ".stamps").iterdir()}
    assert _make_dry_run(tmp_path) == []
    assert _make_dry_run(tmp_path, "SET=score.kind=latent") == ["evaluate", "export"]
    assert _make_dry_run(tmp_path, "SET=train.epochs=3") == ["train", "evaluate", "export"]
    assert {p: p.read_bytes() for p in (run_path / ".stamps").iterdir()} == stamps
