"""components.checkpoints: atomic checkpoints, the two newest and the best kept, damaged skipped."""

import numpy as np
import pytest

from components.checkpoints import (
    VARIABLES,
    BackgroundSaves,
    CheckpointStore,
    IncompatibleCheckpoint,
)

SHAPES = [(2, 3), (4,)]


def _arrays(value: float) -> list[np.ndarray]:
    return [np.full(shape, value, np.float32) for shape in SHAPES]


def _state(step: int, fingerprint: str = "fp", best: str | None = None) -> dict:
    return {"global_step": step, "fingerprint": fingerprint, "epoch": step, "best_checkpoint": best}


def _save(store: CheckpointStore, step: int, fingerprint: str = "fp") -> None:
    store.save(_arrays(step), _state(step, fingerprint))


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


def test_the_checkpoint_the_state_names_best_outlives_the_two_newest(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1)
    for step in (2, 3, 4):
        store.save(_arrays(step), _state(step, best=store.name(1)))
    names = [p.name for p in store.checkpoints()]
    assert names == ["ckpt-000000004", "ckpt-000000003", "ckpt-000000001"]
    for array, expected in zip(store.arrays("ckpt-000000001", SHAPES), _arrays(1)):
        np.testing.assert_array_equal(array, expected)
    store.save(_arrays(5), _state(5, best=store.name(4)))  # a new best: the old one goes
    assert [p.name for p in store.checkpoints()] == ["ckpt-000000005", "ckpt-000000004"]


def test_arrays_of_a_damaged_or_foreign_checkpoint_raise_oserror_naming_it(tmp_path):
    store = CheckpointStore(tmp_path)
    _save(store, 1)
    with pytest.raises(OSError, match="ckpt-000000001"):
        store.arrays("ckpt-000000001", [(2, 3), (5,)])
    (store.checkpoints()[0] / VARIABLES).write_bytes(b"truncated")
    with pytest.raises(OSError, match="damaged"):
        store.arrays("ckpt-000000001", SHAPES)


def test_background_saves_land_in_order_and_wait_reraises_a_failed_write(tmp_path):
    store = CheckpointStore(tmp_path / "train.partial")
    saves = BackgroundSaves(store)
    for step in (1, 2, 3):
        saves.save(_arrays(step), _state(step))
    saves.wait()
    assert [p.name for p in store.checkpoints()] == ["ckpt-000000003", "ckpt-000000002"]
    assert store.latest(SHAPES, "fp").state["epoch"] == 3
    store.root.rename(tmp_path / "moved")
    store.root.write_text("a file where the folder should be")
    saves.save(_arrays(4), _state(4))
    with pytest.raises(OSError):
        saves.wait()
    saves.wait()  # the failure is reported once
