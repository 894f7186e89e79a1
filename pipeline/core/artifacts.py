"""Stage outputs: written to a temporary folder, moved into place when complete.

Each stage owns ``artifacts/<run>/<stage>/``. It writes into a hidden sibling
folder and, only once everything is written, adds ``_SUCCESS`` and swaps the
folder into place, so a failed or interrupted stage never leaves half an
output where the next stage (or make) would take it for a finished one. What
a stage may write is declared in the stage table (``stages.py``): an
undeclared or missing output stops the move.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.core import stages
from pipeline.core.errors import PipelineError

SUCCESS = "_SUCCESS"
ARTIFACTS_ROOT = Path(os.environ.get("GANOMALY_ARTIFACTS", "artifacts"))


def run_dir(run: str, root: Path | None = None) -> Path:
    return Path(root or ARTIFACTS_ROOT) / run


def require_stage(run_path: Path, stage: str) -> Path:
    """Returns a finished stage's folder, or fails naming the missing stage."""
    stages.stage(stage)  # only stages of the table
    path = run_path / stage
    if not (path / SUCCESS).is_file():
        raise PipelineError(
            f"{path}: no finished '{stage}' stage here; run `ganomaly {stage}` first"
        )
    return path


@contextlib.contextmanager
def stage_output(run_path: Path, stage: str) -> Iterator[Path]:
    """Yields a temporary folder that replaces ``run_path/stage`` on success.

    Args:
        run_path: ``artifacts/<run>``.
        stage: the stage name, also the output folder's name.

    Yields:
        The temporary folder to write into.
    """
    run_path.mkdir(parents=True, exist_ok=True)
    final = run_path / stage
    tmp = run_path / f".{stage}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        check_outputs(stage, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / SUCCESS).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
    old = run_path / f".{stage}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def check_outputs(stage: str, folder: Path) -> None:
    """Fails unless ``folder`` holds exactly what the stage table declares for ``stage``."""
    entries = [(path.name, path.is_dir()) for path in folder.iterdir() if path.name != SUCCESS]
    declared = stages.stage(stage)
    undeclared, missing = declared.undeclared(entries), declared.missing(entries)
    if undeclared or missing:
        raise RuntimeError(
            f"stage {stage!r} wrote undeclared {undeclared} or left out {missing}: "
            "the stage table (pipeline/core/stages.py) and the stage disagree"
        )
