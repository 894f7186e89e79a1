"""Labelled defects in training: ingest moves them, the head learns them, test never sees them."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from models.anomalies import corrupt
from pipeline.cli import run_stage
from pipeline.core.errors import ConfigError, DataError
from tests.conftest import tiny_config
from tests.test_defect_head import HEAD, _compiled, _normals
from tests.test_ingest_stage import _config, _ingest, _mask, _mvtec, _png

# ingest ---------------------------------------------------------------------------------------


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["split"] == "train") & (frame["label"] == 1)]


def test_n_per_type_move_from_test_to_train_and_the_normals_split_as_before(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "two", n_train=12, n_good=3, defects={"crack": 4, "dent": 5})
    runs = tmp_path / "artifacts"
    plain = _ingest(_config(root), runs / "plain")
    moved = _ingest(_config(root, "data.labelled_defects=2"), runs / "moved")
    again = _ingest(_config(root, "data.labelled_defects=2"), runs / "again")
    other_seed = _ingest(_config(root, "data.labelled_defects=2", "data.seed=1"), runs / "other")

    assert _labelled(plain).empty
    labelled = _labelled(moved)
    assert labelled["defect_type"].value_counts().to_dict() == {"crack": 2, "dent": 2}
    assert (labelled["mask_path"] != "").all()
    test_defects = moved[(moved["split"] == "test") & (moved["label"] == 1)]
    assert test_defects["defect_type"].value_counts().to_dict() == {"crack": 2, "dent": 3}
    assert not set(labelled["path"]) & set(test_defects["path"])
    # Seeded: the same seed picks the same images, another seed others.
    assert set(_labelled(again)["path"]) == set(labelled["path"])
    assert set(_labelled(other_seed)["path"]) != set(labelled["path"])
    # The normals' splits do not move with N (the labelled draw has its own generator).
    normals = [f[f["label"] == 0].set_index("path")["split"] for f in (plain, moved)]
    assert normals[0].equals(normals[1])


def test_train_defect_folders_are_labelled_defects_with_their_masks(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "own", n_train=8, defects={"crack": 2})
    for i in range(3):
        _png(root / "train" / "crack" / f"t{i}.png", 900 + i)
        _mask(root / "ground_truth" / "crack" / f"t{i}_mask.png")
    frame = _ingest(_config(root), tmp_path / "artifacts" / "own")
    labelled = _labelled(frame)
    assert sorted(labelled["path"]) == [
        str(root / "train" / "crack" / f"t{i}.png") for i in range(3)
    ]
    masks = [str(root / "ground_truth" / "crack" / f"t{i}_mask.png") for i in range(3)]
    assert sorted(labelled["mask_path"]) == masks
    assert len(frame[(frame["split"] == "test") & (frame["label"] == 1)]) == 2


def test_folders_and_csv_layouts_take_labelled_defects_too(tmp_path, mlflow_uri):
    folders = tmp_path / "folders"
    for i in range(10):
        _png(folders / "normal" / f"n{i}.png", 5000 + i)
    _png(folders / "abnormal" / "dent" / "d0.png", 5100)
    _png(folders / "train" / "dent" / "l0.png", 5101)
    frame = _ingest(_config(folders), tmp_path / "artifacts" / "folders")
    assert list(_labelled(frame)["path"]) == [str(folders / "train" / "dent" / "l0.png")]

    root = tmp_path / "csvdata"
    rows = ["path,label,split,defect_type"]
    for i in range(10):
        _png(root / f"n{i}.png", 7000 + i)
        rows.append(f"n{i}.png,0,,")
    _png(root / "d0.png", 7100)
    _png(root / "d1.png", 7101)
    rows += ["d0.png,1,train,scratch", "d1.png,1,,scratch"]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    frame = _ingest(_config(root / "list.csv"), tmp_path / "artifacts" / "csv")
    labelled = _labelled(frame)
    assert list(labelled["path"]) == [str(root / "d0.png")]
    assert list(labelled["mask_path"]) == [""]  # an image label only
    assert frame.set_index("path").loc[str(root / "d1.png"), "split"] == "test"


def test_a_test_copy_of_a_labelled_defect_is_a_leak(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "leak", defects={"crack": 2})
    copy = root / "train" / "crack" / "copy.png"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((root / "test" / "crack" / "000.png").read_bytes())
    _mask(root / "ground_truth" / "crack" / "copy_mask.png")
    run_path = tmp_path / "artifacts" / "leak"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(root), "leak", run_path)
    assert f"{root / 'test' / 'crack' / '000.png'}: same file as {copy} in train" in str(
        caught.value
    )
    assert not (run_path / "ingest").exists()


def test_a_negative_n_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.labelled_defects: -1 is negative"):
        _config(tmp_path, "data.labelled_defects=-1")


def test_a_type_with_too_few_images_is_refused_and_nothing_is_written(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "few", defects={"crack": 4, "dent": 2})
    run_path = tmp_path / "artifacts" / "few"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(root, "data.labelled_defects=2"), "few", run_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("data.labelled_defects: 2 but defect type 'dent' has 2 image(s)")
    assert not (run_path / "ingest").exists()


def test_the_draw_passes_over_test_defects_whose_mask_marks_nothing(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "blank", defects={"crack": 5})
    blank = [root / "ground_truth" / "crack" / f"{i:03d}_mask.png" for i in (0, 2, 3)]
    for mask in blank:
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(mask)
    frame = _ingest(_config(root, "data.labelled_defects=2"), tmp_path / "artifacts" / "blank")
    assert sorted(_labelled(frame)["mask_path"]) == [
        str(root / "ground_truth" / "crack" / f"{i:03d}_mask.png") for i in (1, 4)
    ]
    test_defects = frame[(frame["split"] == "test") & (frame["label"] == 1)]
    assert sorted(test_defects["mask_path"]) == sorted(map(str, blank))  # still scored

    run_path = tmp_path / "artifacts" / "three"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(root, "data.labelled_defects=3"), "three", run_path)
    assert str(caught.value) == (
        "data.labelled_defects: 3 but defect type 'crack' has 2 image(s) whose mask "
        "marks a pixel; it needs 3"
    )
    assert not (run_path / "ingest").exists()


def _labelled_mask_case(root, case: str):
    """An mvtec folder whose one labelled defect has a mask that is ``case``."""
    _mvtec(root, defects={"crack": 2})
    image = _png(root / "train" / "crack" / "t0.png", 4242)
    mask_path = root / "ground_truth" / "crack" / "t0_mask.png"
    if case == "wrong size":
        _mask(mask_path, side=24)
    elif case == "empty":
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(mask_path)
    return image, mask_path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "{image}: defective image without its mask"),
        ("wrong size", "{mask}: mask is 24x24 but image {image} is 48x48"),
        ("empty", "{mask}: empty mask for labelled defect {image}"),
    ],
)
def test_a_labelled_defects_bad_mask_is_named_and_nothing_is_written(
    tmp_path, mlflow_uri, case, expected
):
    image, mask = _labelled_mask_case(tmp_path / "bad", case)
    run_path = tmp_path / "artifacts" / "bad"
    with pytest.raises(DataError) as caught:
        run_stage("ingest", _config(tmp_path / "bad"), "bad", run_path)
    assert str(caught.value).splitlines()[-1] == expected.format(image=image, mask=mask)
    assert not (run_path / "ingest").exists()


def test_contamination_plants_defects_among_the_training_normals(tmp_path, mlflow_uri):
    root = _mvtec(tmp_path / "dirty", n_train=18, defects={"crack": 6, "dent": 6})
    frame = _ingest(_config(root, "data.contamination=0.1"), tmp_path / "artifacts" / "dirty")
    planted = frame[frame["planted"] != ""]
    assert len(planted) == 2  # 10% of 18 + 2 "good" images
    assert (planted["label"] == 0).all() and (planted["defect_type"] == "good").all()
    assert set(planted["split"]) <= {"train", "val"} and (planted["mask_path"] == "").all()
    assert all("/test/" in path for path in planted["path"])
    assert set(planted["planted"]) <= {"crack", "dent"}


# the model ------------------------------------------------------------------------------------


def _streak_defects(count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Bright vertical streaks (unlike any synthetic anomaly kind) and their masks."""
    images, masks = _normals(count, seed=777).numpy(), np.zeros((count, 32, 32, 1), "float32")
    for i in range(count):
        column = 6 + 5 * i % 20
        images[i, 4:28, column : column + 2] = 0.9
        masks[i, 4:28, column : column + 2] = 1.0
    return tf.constant(images), tf.constant(masks)


# Traced once for the three models below (eager, the anomalies cost as much as the steps).
_corrupt = tf.function(corrupt)


def _train_head(labelled: bool, has_mask: float, steps: int = 40):
    keras.utils.set_random_seed(0)
    model = _compiled(**HEAD)
    defects, masks = _streak_defects(4)
    step = tf.function(model.train_step)
    for i in range(steps):
        batch = _normals(16, seed=i)
        inputs, batch_masks = _corrupt(batch, 0.5, tf.constant([i, 1], tf.int64))
        data = (inputs, batch, batch_masks)
        if labelled:
            data += (defects, masks, tf.fill([4], has_mask))
        step(data)
    return model


def _head_logits(model, images) -> np.ndarray:
    reconstruction = model.generator(images, training=False)[0]
    return model.head([images, reconstruction], training=False).numpy()


@pytest.fixture(scope="module")
def head_models():
    """Three tiny models, same seed and batches: no labels, mask labels, image labels."""
    return {
        "none": _train_head(False, 1.0),
        "mask": _train_head(True, 1.0),
        "image": _train_head(True, 0.0),
    }


def test_mask_and_image_labels_each_move_the_head_on_unseen_defects(head_models):
    unseen, unseen_masks = _streak_defects(8)
    unseen, unseen_masks = unseen[4:], unseen_masks[4:, ..., 0].numpy() > 0
    inside = {k: _head_logits(m, unseen)[unseen_masks].mean() for k, m in head_models.items()}
    top = {
        k: np.sort(_head_logits(m, unseen).reshape(4, -1), axis=1)[:, -10:].mean()
        for k, m in head_models.items()
    }
    # The per-image loss lifts these streaks by about 1.9 logits (the batch-summed one,
    # which gave the large defects most of the weight, by more on this easy case).
    assert inside["mask"] > inside["none"] + 1.0, inside
    assert top["image"] > top["none"] + 1.0, top


def test_the_generator_never_learns_from_labelled_defects(head_models):
    plain, labelled = head_models["none"], head_models["mask"]
    for mine, theirs in zip(labelled.generator.weights, plain.generator.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    heads = zip(labelled.head.trainable_weights, plain.head.trainable_weights)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in heads)


# the training data ----------------------------------------------------------------------------


def test_a_labelled_defect_and_its_mask_are_flipped_together():
    from components.train_data import _flip_labelled

    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(16, 8, 8, 1)) > 0.7).astype("float32")
    images = np.concatenate([masks, 1 - masks], -1)  # two channels that mirror the mask
    data = tf.data.Dataset.from_tensor_slices((images, masks, np.ones(16, "float32")))
    flipped = list(_flip_labelled(data, seed=3).as_numpy_iterator())
    for image, mask, has_mask in flipped:
        np.testing.assert_array_equal(image[..., :1], mask)
        np.testing.assert_array_equal(image[..., 1:], 1 - mask)
        assert has_mask == 1.0
    changed = sum(not np.array_equal(f[1], m) for f, m in zip(flipped, masks))
    assert changed >= 8  # most of them were flipped one way or another


def _preprocessed(tmp_path, root, *overrides):
    config = _config(root, *overrides)
    run_path = tmp_path / "artifacts" / "prep"
    for stage in ("ingest", "preprocess"):
        run_stage(stage, config, "prep", run_path)
    return config, run_path / "preprocess"


def test_every_batch_carries_a_quarter_as_many_labelled_defects_as_tiles(tmp_path, mlflow_uri):
    from components.train_data import TrainingData

    root = _mvtec(tmp_path / "tiles", n_train=12, defects={"crack": 3})
    tiles = ["preprocess.tiles=[24,0]", "preprocess.tiles_image=[48,48]"]
    config, prep = _preprocessed(tmp_path, root, "data.labelled_defects=1", *tiles)
    config = tiny_config("data.labelled_defects=1", *tiles, "train.batch_size=8")
    data = TrainingData(config, prep)
    assert data.labelled_count == 4  # one image, four tiles
    batch = next(iter(data.epoch(0)))
    assert len(batch) == 6
    defects, masks, has_mask = batch[3:]
    assert defects.shape == (2, 32, 32, 1) and masks.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(has_mask.numpy(), [1.0, 1.0])
    # Each defect sits on one of the batch's clean normals, its own background gone.
    outside = masks.numpy()[..., 0] < 0.5
    for i, host in enumerate(batch[1].numpy()[:2]):
        np.testing.assert_array_equal(defects[i].numpy()[outside[i]], host[outside[i]])
    assert data.labelled_types() == {"crack": {"images": 1, "masked": 1}}
    # What the labelled defects turn on in a config that has the head off.
    from pipeline.core import records

    assert records.labelled_settings(config, prep) == {
        "model.defect_head": True,
        "train.synthetic_anomalies": 0.5,
        "score.kind": "head_residual",
    }
    resolved = records.with_resolved_spec(config, prep)
    assert resolved.model.defect_head and resolved.score.kind == "head_residual"
    assert resolved.train.synthetic_anomalies == 0.5


def test_tiles_refuse_labelled_defects_without_masks(tmp_path, mlflow_uri):
    from components.train_data import TrainingData

    root = _mvtec(tmp_path / "nomask", n_train=12, defects={"crack": 3}, masks=False)
    tiles = ["preprocess.tiles=[24,0]", "preprocess.tiles_image=[48,48]"]
    _, prep = _preprocessed(tmp_path, root, "data.labelled_defects=1", *tiles)
    with pytest.raises(
        DataError, match="1 labelled defect\\(s\\) without a mask; preprocess.tiles"
    ):
        TrainingData(tiny_config(*tiles), prep)


def test_without_labelled_defects_the_batches_are_todays(tiny_preprocessed):
    from components.train_data import TrainingData

    config_path, root = tiny_preprocessed
    data = TrainingData(tiny_config("train.synthetic_anomalies=0.5"), root / "base" / "preprocess")
    assert data.labelled_count == 0 and data.labelled_types() == {}
    batch = next(iter(data.epoch(0)))
    assert len(batch) == 3  # (corrupted, clean, masks): the model's unlabelled path


# thin defects -----------------------------------------------------------------------------------


def _thin_line_mask(side: int, row: int) -> np.ndarray:
    mask = np.zeros((side, side), np.float32)
    mask[row, side // 8 : -side // 8] = 1.0  # a crack one pixel wide
    return mask


def test_a_thin_defect_keeps_a_line_in_its_training_target():
    from models.preprocessing import resize_mask

    spec = {"isize": 32, "resize": "squash", "tiles": [], "tiles_image": []}
    thin = _thin_line_mask(160, 80)  # a fifth of a pixel wide at 32 px
    assert not resize_mask(thin, spec).any()  # what the pixel metrics count: nothing
    kept = resize_mask(thin, spec, keep_thin=True)
    rows = np.flatnonzero(kept.any(axis=1))
    assert 1 <= len(rows) <= 2 and abs(rows.mean() - 16) <= 1  # one line, where it lies
    assert kept[rows[0]].sum() >= 20  # along the crack's length
    # A defect wide enough is drawn as before, and a thin one beside it still kept.
    both = thin.copy()
    both[10:60, 10:60] = 1.0
    blob = resize_mask(both, spec)
    kept = resize_mask(both, spec, keep_thin=True)
    np.testing.assert_array_equal(kept[:13], blob[:13])
    assert not blob[14:].any() and kept[14:].any()


def test_a_labelled_thin_crack_trains_the_head_on_its_line_and_test_masks_are_unchanged(
    tmp_path, mlflow_uri
):
    root = _mvtec(tmp_path / "thin", n_train=8, defects={"crack": 3})
    for i, image in enumerate(sorted((root / "test" / "crack").iterdir())):  # hairline masks
        _png(image, 700 + i, side=160)
        mask = root / "ground_truth" / "crack" / f"{image.stem}_mask.png"
        Image.fromarray((_thin_line_mask(160, 80) * 255).astype(np.uint8)).save(mask)
    _, prep = _preprocessed(tmp_path, root, "data.labelled_defects=1")
    from pipeline.core import records

    def defect_masks(split):
        return [ex["mask"].numpy() for ex in records.read_split(prep, split) if ex["label"] == 1]

    (labelled,) = defect_masks("train")
    assert labelled.any() and labelled.sum() <= 2 * 32
    tested = defect_masks("test")
    assert len(tested) == 2 and not any(mask.any() for mask in tested)
