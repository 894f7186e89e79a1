"""Resumable training state: ``artifacts/<run>/train.partial/``, beside the stage's output.

    store = CheckpointStore(run_path / "train.partial")
    store.save(variables, state)                 # atomic: write, fsync, rename
    loaded = store.latest(variables, fingerprint) # the newest readable, compatible one
    saves = BackgroundSaves(store)               # the same writes off the training thread

Each checkpoint is a folder ``ckpt-<global step>/`` holding ``variables.npz``
(every variable of the networks, both optimizers and the re-initialisation
seed, in a fixed order) and ``state.json`` (epoch, step, history, best so far,
the sha256 of ``variables.npz`` and the config fingerprint). It is written
under a temporary name, fsynced and renamed, so a checkpoint folder is either
complete or absent; a damaged one (a truncated file) fails its checksum and
the one before it is used. The two newest are kept, and the one the state
names as ``best_checkpoint`` (the best epoch's end): the best weights cost no
write of their own. The train stage deletes the folder once its output is in
place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIABLES = "variables.npz"
STATE = "state.json"
BEST = "best.weights.h5"
KEEP = 2


@dataclass
class Loaded:
    """A checkpoint read back: its folder, its state and the skipped damaged ones."""

    path: Path
    state: dict
    skipped: list[str]


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


class CheckpointStore:
    """The checkpoints of one run's training.

    Args:
        root: ``artifacts/<run>/train.partial``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def best_weights(self) -> Path:
        return self.root / BEST

    def checkpoints(self) -> list[Path]:
        """The complete checkpoint folders, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob("ckpt-*") if p.is_dir() and _step_of(p) >= 0]
        return sorted(found, key=_step_of, reverse=True)

    def save(self, arrays: list[np.ndarray], state: dict) -> Path:
        """Writes one checkpoint atomically; returns its folder.

        Keeps the ``KEEP`` newest and the one ``state["best_checkpoint"]`` names.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / self.name(state["global_step"])
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        buffer = io.BytesIO()
        np.savez(buffer, *arrays)
        data = buffer.getvalue()
        _fsync_write(tmp / VARIABLES, data)
        state = {**state, "variables_sha256": hashlib.sha256(data).hexdigest()}
        _fsync_write(tmp / STATE, json.dumps(state).encode())
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)  # the same step written again (a rollback)
        tmp.rename(final)
        _fsync_dir(self.root)
        for old in self.checkpoints()[KEEP:]:
            if old.name != state.get("best_checkpoint"):
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def name(global_step: int) -> str:
        """The folder name of the checkpoint written after ``global_step`` steps."""
        return f"ckpt-{global_step:09d}"

    def arrays(self, name: str, shapes: list[tuple]) -> list[np.ndarray]:
        """The variables of checkpoint ``name``, checked; ``OSError`` when it is damaged."""
        state = self._read(self.root / name, shapes)
        if state is None or state.get("fingerprint") == "shapes differ":
            raise OSError(f"{self.root / name}: damaged or written by another model")
        return state["_arrays"]

    def latest(self, shapes: list[tuple], fingerprint: str) -> Loaded | None:
        """The newest checkpoint that reads back whole and fits; None when there is none.

        Args:
            shapes: the shapes the variables must have, in order.
            fingerprint: what the run's settings must hash to.

        Raises:
            IncompatibleCheckpoint: the newest readable checkpoint was written
                with other settings (nothing older is tried).
        """
        skipped = []
        for path in self.checkpoints():
            state = self._read(path, shapes)
            if state is None:
                skipped.append(path.name)
                continue
            if state.get("fingerprint") != fingerprint:
                raise IncompatibleCheckpoint(path, state)
            return Loaded(path, state, skipped)
        return None

    @staticmethod
    def _read(path: Path, shapes: list[tuple]) -> dict | None:
        """The state of a checkpoint whose variables pass the checksum and shapes."""
        try:
            state = json.loads((path / STATE).read_text())
            data = (path / VARIABLES).read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != state.get("variables_sha256"):
            return None
        with np.load(io.BytesIO(data)) as stored:
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        if [tuple(a.shape) for a in arrays] != [tuple(s) for s in shapes]:
            state["fingerprint"] = "shapes differ"
        state["_arrays"] = arrays
        return state

    def clear(self) -> None:
        """Removes every checkpoint and the best weights (the stage completed)."""
        shutil.rmtree(self.root, ignore_errors=True)


class BackgroundSaves:
    """``CheckpointStore.save`` on one background thread, so training runs on meanwhile.

    One save at a time: a new one first waits for the one in flight. Call
    ``wait()`` before reading the store; it re-raises what a save raised.

    Args:
        store: where the checkpoints go.
    """

    def __init__(self, store: CheckpointStore):
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def save(self, arrays: list[np.ndarray], state: dict) -> None:
        """Starts writing a checkpoint; ``arrays`` and ``state`` must not change after."""
        self.wait()
        self._pending = self._pool.submit(self.store.save, arrays, state)

    def wait(self) -> None:
        """Returns once the save in flight, if any, is on disk."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


class IncompatibleCheckpoint(Exception):
    """The newest checkpoint was written with settings that make it unusable."""

    def __init__(self, path: Path, state: dict):
        super().__init__(f"{path}: written with other settings")
        self.path, self.state = path, state
