"""components.checkpoints: atomic checkpoints, the two newest kept, damaged ones skipped."""

import numpy as np
import pytest

from components.checkpoints import VARIABLES, CheckpointStore, IncompatibleCheckpoint

SHAPES = [(2, 3), (4,)]


def _arrays(value: float) -> list[np.ndarray]:
    return [np.full(shape, value, np.float32) for shape in SHAPES]


def _save(store: CheckpointStore, step: int, fingerprint: str = "fp") -> None:
    store.save(_arrays(step), {"global_step": step, "fingerprint": fingerprint, "epoch": step})


def test_the_newest_checkpoint_reads_back_and_two_are_kept(tmp_path):
    store = CheckpointStore(tmp_path / "train.partial")
    for step in (1, 2, 3):
        _save(store, step)
    assert [p.name for p in store.checkpoints()] == ["ckpt-000000003", "ckpt-000000002"]
    loaded = store.latest(SHAPES, "fp")
    assert loaded.path.name == "ckpt-000000003" and loaded.skipped == []
    assert loaded.state["epoch"] == 3
    for array, expected in zip(loaded.state["_arrays"], _arrays(3)):
        np.testing.assert_array_equal(array, expected)


def test_a_half_written_checkpoint_is_invisible(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1)
    (tmp_path / ".ckpt-000000002.tmp-123").mkdir()  # a crash in the middle of a write
    assert [p.name for p in store.checkpoints()] == ["ckpt-000000001"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1)
    _save(store, 2)
    newest = store.checkpoints()[0] / VARIABLES
    newest.write_bytes(newest.read_bytes()[:100])
    loaded = store.latest(SHAPES, "fp")
    assert loaded.path.name == "ckpt-000000001"
    assert loaded.skipped == ["ckpt-000000002"]
    (loaded.path / VARIABLES).write_bytes(b"")
    assert store.latest(SHAPES, "fp") is None


def test_other_settings_or_shapes_make_a_checkpoint_incompatible(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1, fingerprint="other settings")
    with pytest.raises(IncompatibleCheckpoint):
        store.latest(SHAPES, "fp")
    store.clear()
    _save(store, 1)
    with pytest.raises(IncompatibleCheckpoint):
        store.latest([(2, 3), (5,)], "fp")
    store.clear()
    assert not tmp_path.exists() and store.latest(SHAPES, "fp") is None
