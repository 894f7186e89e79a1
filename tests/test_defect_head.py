"""The defect head: trained on synthetic anomalies (and labelled defects), scored, exported."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import roc_auc_score

from components.train import compiled_model
from models.anomalies import KINDS, corrupt
from models.ganomaly import GANomaly
from models.scorer import Scorer
from pipeline import score_table
from tests.conftest import run_all_stages, tiny_config

HEAD = {"isize": 32, "channels": 1, "options": {"nz": 8, "ngf": 8, "ndf": 8, "defect_head": True}}


def _adam():
    return keras.optimizers.Adam(2e-3)


def _compiled(**kwargs) -> GANomaly:
    model = GANomaly(**kwargs)
    head_optimizer = _adam() if model.head is not None else None
    model.compile(g_optimizer=_adam(), d_optimizer=_adam(), h_optimizer=head_optimizer)
    model.build_optimizers()
    return model


def _normals(n: int, seed: int) -> tf.Tensor:
    """Smooth horizontal gradients with a little noise: anomalies on them are visible."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-0.5, 0.5, 32, dtype="float32")[None, None, :, None]
    images = ramp * rng.uniform(0.5, 1.0, (n, 1, 1, 1)) + rng.normal(0, 0.03, (n, 32, 32, 1))
    return tf.constant(images.astype("float32"))


def test_compile_asks_for_the_heads_optimizer_exactly_when_there_is_a_head():
    with pytest.raises(ValueError, match="defect_head=True.*got None"):
        GANomaly(**HEAD).compile(g_optimizer=_adam(), d_optimizer=_adam())
    with pytest.raises(ValueError, match="defect_head=False"):
        GANomaly(isize=32).compile(g_optimizer=_adam(), d_optimizer=_adam(), h_optimizer=_adam())


def test_compile_refuses_a_label_pooling_share_outside_0_to_1():
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"label_topk_fraction.*got {share!r}"):
            GANomaly(**HEAD).compile(
                g_optimizer=_adam(),
                d_optimizer=_adam(),
                h_optimizer=_adam(),
                label_topk_fraction=share,
            )


def test_the_train_stage_pools_image_labels_as_the_image_score_does():
    config = tiny_config(
        "model.defect_head=true", "train.synthetic_anomalies=0.5", "score.topk_fraction=0.003"
    )
    assert compiled_model(config).label_topk_fraction == 0.003


def test_the_training_state_holds_the_head_and_its_optimizer():
    plain = _compiled(**{**HEAD, "options": {**HEAD["options"], "defect_head": False}})
    with_head = _compiled(**HEAD)
    extra = len(with_head.training_state) - len(plain.training_state)
    head_vars = len(with_head.head.variables) + len(with_head.h_optimizer.variables)
    assert extra == head_vars > 0
    assert len(with_head.optimizers) == 3 and len(plain.optimizers) == 2


def test_the_head_learns_to_find_synthetic_anomalies_on_unseen_normals():
    keras.utils.set_random_seed(0)
    model = _compiled(**HEAD)
    clean = _normals(32, seed=1000)  # images and anomalies it never trains on
    corrupted, masks = corrupt(clean, 1.0, tf.constant([1000, 2], tf.int64))
    truth = masks.numpy()[..., 0].ravel() >= 0.3

    def pixel_auroc():
        reconstruction = model.generator(corrupted, training=False)[0]
        logits = model.head([corrupted, reconstruction], training=False).numpy()
        return roc_auc_score(truth, logits.ravel())

    untrained = pixel_auroc()
    step = tf.function(model.train_step)
    for i in range(60):
        batch = _normals(16, seed=i)
        inputs, batch_masks = corrupt(batch, 0.75, tf.constant([i, 1], tf.int64))
        losses = step((inputs, batch, batch_masks))
    assert np.isfinite(float(losses["head_loss"]))
    trained = pixel_auroc()
    # 60 steps of a tiny head already find most of them (0.72 when written).
    assert trained > 0.68 and trained > untrained + 0.1, (untrained, trained)


def test_head_kinds_need_a_model_with_a_head():
    with pytest.raises(ValueError, match="needs a model trained with a defect head"):
        Scorer(GANomaly(isize=32, options={"nz": 8, "ngf": 8, "ndf": 8}), {"kind": "head"})
    scorer = Scorer(GANomaly(**HEAD), {"kind": "head_residual"})
    out = scorer.score(_normals(2, seed=0))
    assert out["anomaly_map"].shape == (2, 32, 32) and out["score"].shape == (2,)
    assert scorer.head is not None and scorer.discriminator is None


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, mlflow_uri, data_dir):
    """The five stages on the tiny valve seats, with a defect head and its score kind.

    Two labelled defects of each type too: the head's settings, given here, are kept.
    """
    config = tiny_config(
        "data.labelled_defects=2",
        "model.defect_head=true",
        "model.head_filters=8",
        "train.synthetic_anomalies=0.5",
        "score.kind=head_residual",
    )
    return config, run_all_stages(tmp_path_factory, config, "head")


def test_training_chooses_the_epoch_on_the_heads_validation_loss(head_run):
    _, run_path = head_run
    summary = json.loads((run_path / "train" / "train.json").read_text())
    history = pd.read_csv(run_path / "train" / "history.csv")
    assert {"head_loss", "val_head_loss", "val_con_loss"} <= set(history.columns)
    assert summary["best_val_head_loss"] == history["val_head_loss"].min()
    assert summary["best_epoch"] == int(history["val_head_loss"].idxmin()) + 1


def test_the_train_stage_shows_each_synthetic_anomaly_and_its_mask(head_run):
    _, run_path = head_run
    picture = np.array(Image.open(run_path / "train" / "synthetic_anomalies.png"))
    assert picture.shape == (3 * 32, len(KINDS) * 32)
    masks = picture[64:]
    for k, kind in enumerate(KINDS):
        assert masks[:, 32 * k : 32 * (k + 1)].max() > 127, kind


def test_the_saved_model_scores_with_the_head_as_evaluate_did(head_run):
    _, run_path = head_run
    scores = pd.read_csv(run_path / "evaluate" / "scores.csv").head(6)
    files = [open(p, "rb").read() for p in scores["path"]]
    served = tf.saved_model.load(str(run_path / "export" / "ganomaly" / "1"))
    out = served.signatures["serving_bytes"](encoded=tf.constant(files))
    np.testing.assert_allclose(out["score"].numpy(), scores["score"], rtol=1e-4, atol=1e-4)
    card_file = run_path / "export" / "ganomaly" / "1" / "assets" / "ganomaly.json"
    card = json.loads(card_file.read_text())
    assert card["score"]["kind"] == "head_residual"


def test_score_table_adds_the_head_kinds_when_the_model_has_a_head(head_run, capsys):
    config, run_path = head_run
    rows = score_table.score_table(config, run_path, kinds=None)
    kinds = [line.split("|")[1].strip() for line in rows[2:]]
    assert "head" in kinds and "head_residual" in kinds and "residual" in kinds


def test_labelled_images_never_reach_the_test_metrics(head_run):
    _, run_path = head_run
    manifest = pd.read_csv(run_path / "ingest" / "manifest.csv", keep_default_na=False)
    labelled = manifest[(manifest["split"] == "train") & (manifest["label"] == 1)]
    assert labelled["defect_type"].value_counts().to_dict() == {
        "chip": 2,
        "pit": 2,
        "scratch": 2,
        "stain": 2,
    }
    scored = pd.read_csv(run_path / "evaluate" / "scores.csv", keep_default_na=False)
    assert not set(labelled["path"]) & set(scored["path"])
    assert len(scored) == int((manifest["split"] == "test").sum())


def test_labelled_defects_are_no_suspects(head_run):
    _, run_path = head_run
    manifest = pd.read_csv(run_path / "ingest" / "manifest.csv", keep_default_na=False)
    normals = manifest[manifest["split"].isin(["train", "val"]) & (manifest["label"] == 0)]
    suspects = pd.read_csv(run_path / "evaluate" / "suspects.csv", keep_default_na=False)
    assert sorted(suspects["path"]) == sorted(normals["path"])
    assert suspects["score"].is_monotonic_decreasing


def test_the_model_card_names_the_labelled_defects_it_learned_from(head_run):
    _, run_path = head_run
    card_file = run_path / "export" / "ganomaly" / "1" / "assets" / "ganomaly.json"
    card = json.loads(card_file.read_text())
    assert card["labelled_defects"] == {
        kind: {"images": 2, "masked": 2} for kind in ("chip", "pit", "scratch", "stain")
    }
