"""models.ganomaly.GANomaly: arguments, config, training steps, re-initialisation, scoring."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import ganomaly, scoring
from models.ganomaly import GANomaly

SMALL = {"isize": 32, "channels": 1, "nz": 8, "ngf": 8, "ndf": 8}
TRACKED = ("g_loss", "d_loss", "adv_loss", "con_loss", "enc_loss", "d_reinit")


def _images(n: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, channels)).astype("float32")


def _compile(model: GANomaly) -> GANomaly:
    model.compile(
        g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
    )
    return model


def _snapshot(weights) -> list:
    return [np.array(w.numpy()) for w in weights]


def _np(outputs: dict) -> dict:
    return {k: np.asarray(v) for k, v in outputs.items()}


@pytest.fixture(scope="module")
def trained():
    """A small GANomaly fitted for two steps (batch 4 of 8 images), then calibrated."""
    keras.utils.set_random_seed(0)
    model = _compile(GANomaly(**SMALL, score_kind="residual"))
    before_g = _snapshot(model.generator.trainable_weights)
    before_d = _snapshot(model.discriminator.trainable_weights)
    history = model.fit(_images(8), batch_size=4, epochs=1, verbose=0, shuffle=False).history
    after_fit = {
        "g": _snapshot(model.generator.trainable_weights),
        "d": _snapshot(model.discriminator.trainable_weights),
    }
    calibration = [_images(4, seed=1), _images(4, seed=2)]
    stats = model.calibrate(calibration)
    return {
        "model": model,
        "history": history,
        "before": {"g": before_g, "d": before_d},
        "after_fit": after_fit,
        "calibration": np.concatenate(calibration),
        "stats": stats,
    }


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"isize": 40}, "isize", 40),
        ({"isize": 16}, "isize", 16),
        ({"channels": 2}, "channels", 2),
        ({"nz": 0}, "nz", 0),
        ({"ngf": -1}, "ngf", -1),
        ({"ndf": 0}, "ndf", 0),
        ({"extra_layers": -1}, "extra_layers", -1),
        ({"score_kind": "foo"}, "score_kind", "foo"),
        ({"smoothing_sigma": -0.5}, "smoothing_sigma", -0.5),
        ({"topk_fraction": 0.0}, "topk_fraction", 0.0),
        ({"topk_fraction": 1.5}, "topk_fraction", 1.5),
    ],
)
def test_constructor_rejects_bad_arguments_quoting_the_value(kwargs, name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b.*{re.escape(repr(value))}$"):
        GANomaly(**{**SMALL, **kwargs})


def test_get_config_round_trips():
    model = GANomaly(
        isize=32,
        channels=3,
        nz=8,
        ngf=8,
        ndf=16,
        extra_layers=1,
        score_kind="residual",
        smoothing_sigma=0.5,
        topk_fraction=0.05,
        pixel_norm=True,
        seed=3,
    )
    config = model.get_config()
    expected = {
        "isize": 32,
        "channels": 3,
        "nz": 8,
        "ngf": 8,
        "ndf": 16,
        "extra_layers": 1,
        "score_kind": "residual",
        "smoothing_sigma": 0.5,
        "topk_fraction": 0.05,
        "pixel_norm": True,
        "seed": 3,
    }
    assert {k: config[k] for k in expected} == expected
    clone = GANomaly.from_config(config)
    assert clone.get_config() == config
    assert clone.discriminator.output_shape[1] == (None, 4, 4, 64)


def test_fit_two_steps_changes_both_networks(trained):
    model = trained["model"]
    assert int(model.g_optimizer.iterations.numpy()) == 2
    assert int(model.d_optimizer.iterations.numpy()) == 2
    for net in ("g", "d"):
        before, after = trained["before"][net], trained["after_fit"][net]
        assert len(before) == len(after) > 0
        unchanged = [i for i, (b, a) in enumerate(zip(before, after)) if np.array_equal(b, a)]
        assert not unchanged, f"{net}: trainable weights {unchanged} did not move"


def test_fit_reports_the_tracked_metrics(trained):
    history = trained["history"]
    assert set(TRACKED) <= set(history)
    values = {name: history[name][-1] for name in TRACKED}
    assert all(np.isfinite(v) for v in values.values()), values
    assert values["d_reinit"] == 0.0  # a healthy discriminator is left alone
    assert 0.0 < values["con_loss"] <= 2.0  # L1 between [-1, 1] images
    assert values["d_loss"] > 0.0 and values["adv_loss"] >= 0.0 and values["enc_loss"] >= 0.0
    # the trackers average per-step values, and g_loss is linear in the parts
    assert values["g_loss"] == pytest.approx(
        values["adv_loss"] + 50.0 * values["con_loss"] + values["enc_loss"], rel=1e-4
    )


def test_reinitialize_discriminator_redraws_the_weights():
    model = GANomaly(**SMALL)
    for weight in model.discriminator.weights:
        weight.assign(np.full(weight.shape, 0.5, "float32"))
    assert float(model._reinitialize_discriminator()) == 1.0
    kernels, gammas = [], []
    for weight in model.discriminator.weights:
        value = weight.numpy()
        leaf = weight.path.split("/")[-1]
        if leaf == "kernel":
            kernels.append(value.ravel())
        elif leaf == "gamma":
            gammas.append(value.ravel())
        elif leaf == "moving_variance":
            np.testing.assert_array_equal(value, 1.0, err_msg=weight.path)
        else:
            np.testing.assert_array_equal(value, 0.0, err_msg=weight.path)
    assert len(kernels) >= 3 and gammas
    pooled = np.concatenate(kernels)
    assert abs(pooled.mean()) < 2e-3
    assert pooled.std() == pytest.approx(0.02, rel=0.1)
    assert np.concatenate(gammas).mean() == pytest.approx(1.0, abs=0.01)
    assert 0.005 < np.concatenate(gammas).std() < 0.04

    # a second re-initialisation draws new values
    first = _snapshot(model.discriminator.weights)
    model._reinitialize_discriminator()
    second = _snapshot(model.discriminator.weights)
    kernel_index = [i for i, w in enumerate(model.discriminator.weights) if "kernel" in w.path]
    for i in kernel_index:
        assert not np.allclose(first[i], second[i])


def test_collapsed_discriminator_is_reinitialised_in_train_step(monkeypatch):
    # Any loss is "collapsed" under a huge threshold: every step re-initialises D.
    monkeypatch.setattr(ganomaly, "D_COLLAPSE_LOSS", 1e9)
    keras.utils.set_random_seed(1)
    model = _compile(GANomaly(**SMALL))
    history = model.fit(_images(8), batch_size=4, epochs=1, verbose=0).history
    assert history["d_reinit"][-1] == 2.0
    # The re-initialisation comes after the step's update: the moving statistics the
    # training steps accumulated are back at 0 / 1 and the betas at 0.
    for weight in model.discriminator.weights:
        leaf = weight.path.split("/")[-1]
        if leaf in ("moving_mean", "beta"):
            np.testing.assert_array_equal(weight.numpy(), 0.0, err_msg=weight.path)
        if leaf == "moving_variance":
            np.testing.assert_array_equal(weight.numpy(), 1.0, err_msg=weight.path)


def test_trained_discriminator_keeps_its_moving_statistics(trained):
    # the counterpart of the test above: without a collapse nothing is reset
    moving = [w.numpy() for w in trained["model"].discriminator.weights if "moving_mean" in w.path]
    assert moving and any(np.any(m != 0.0) for m in moving)


def test_calibrate_standardises_the_calibration_scores(trained):
    model, stats = trained["model"], trained["stats"]
    assert stats["images"] == 8
    np.testing.assert_allclose(
        model.score_mean.numpy(), [stats["latent_mean"], stats["map_score_mean"]], rtol=1e-5
    )
    np.testing.assert_allclose(
        model.score_std.numpy(), [stats["latent_std"], stats["map_score_std"]], rtol=1e-5
    )
    # global (not per-pixel) map statistics: one value per map kind
    for i, name in enumerate(scoring.MAP_KINDS):
        np.testing.assert_allclose(model.map_mean.numpy()[i], stats[f"{name}_map_mean"], rtol=1e-5)
        np.testing.assert_allclose(model.map_std.numpy()[i], stats[f"{name}_map_std"], rtol=1e-5)
    assert min(stats["latent_std"], stats["map_score_std"], stats["residual_map_std"]) > 0
    out = _np(model.score(trained["calibration"]))
    for part in ("latent", "map_score", "anomaly_map"):
        assert out[part].mean() == pytest.approx(0.0, abs=1e-3), part
        assert out[part].std() == pytest.approx(1.0, abs=1e-3), part
    np.testing.assert_array_equal(out["score"], out["map_score"])  # score_kind="residual"
    assert out["anomaly_map"].shape == (8, 32, 32)


def test_calibrate_accepts_labelled_batches_and_rejects_no_images(trained):
    model = GANomaly.from_config(trained["model"].get_config())
    model.set_weights(trained["model"].get_weights())
    images = trained["calibration"]
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(8))).batch(4)
    stats = model.calibrate(labelled)
    for key, value in trained["stats"].items():
        assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    with pytest.raises(ValueError, match="at least one"):
        model.calibrate([])


def test_pixel_norm_calibration_varies_per_pixel_around_the_global_mean(trained):
    config = {**trained["model"].get_config(), "pixel_norm": True}
    model = GANomaly.from_config(config)
    model.set_weights(trained["model"].get_weights())
    stats = model.calibrate([trained["calibration"]])
    residual_mean = model.map_mean.numpy()[0]
    assert residual_mean.shape == (32, 32)
    assert residual_mean.std() > 0  # one value per pixel position
    # shrinking each pixel's mean towards the global one keeps their average
    assert residual_mean.mean() == pytest.approx(stats["residual_map_mean"], rel=1e-4)
    out = _np(model.score(trained["calibration"]))
    assert out["map_score"].mean() == pytest.approx(0.0, abs=1e-3)
    assert out["map_score"].std() == pytest.approx(1.0, abs=1e-3)


def test_discriminator_kind_scores_from_the_discriminator_map(trained):
    config = {**trained["model"].get_config(), "score_kind": "discriminator"}
    model = GANomaly.from_config(config)
    model.set_weights(trained["model"].get_weights())
    model.calibrate([trained["calibration"]])
    out = _np(model.score(trained["calibration"]))
    assert out["map_score"].mean() == pytest.approx(0.0, abs=1e-3)
    assert out["map_score"].std() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(out["score"], out["map_score"])
    residual = _np(trained["model"].score(trained["calibration"]))["anomaly_map"]
    assert not np.allclose(out["anomaly_map"], residual)  # its own map, not the residual's
    # Inference mode: one image alone scores as in its batch.
    alone = _np(model.score(trained["calibration"][2:3]))
    np.testing.assert_allclose(alone["anomaly_map"][0], out["anomaly_map"][2], atol=1e-4)


def test_score_of_one_image_equals_its_score_in_a_batch(trained):
    model, images = trained["model"], _images(6, seed=7)
    batch = _np(model.score(images))
    for i in (0, 3, 5):
        alone = _np(model.score(images[i : i + 1]))
        for key in ("score", "latent", "map_score"):
            np.testing.assert_allclose(alone[key][0], batch[key][i], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(alone["anomaly_map"][0], batch["anomaly_map"][i], atol=1e-4)
        np.testing.assert_allclose(
            alone["reconstruction"][0], batch["reconstruction"][i], atol=1e-5
        )


def test_save_and_load_weights_keep_the_scores(trained, tmp_path):
    model, images = trained["model"], _images(4, seed=9)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    clone = GANomaly.from_config(model.get_config())
    fresh = _np(clone.score(images))
    clone.load_weights(path)
    for name in ("score_mean", "score_std", "map_mean", "map_std"):
        np.testing.assert_array_equal(
            getattr(clone, name).numpy(), getattr(model, name).numpy(), err_msg=name
        )
    original, loaded = _np(model.score(images)), _np(clone.score(images))
    assert not np.allclose(fresh["score"], original["score"])  # loading did something
    for key in ("score", "latent", "map_score", "anomaly_map", "reconstruction"):
        np.testing.assert_allclose(loaded[key], original[key], rtol=1e-5, atol=1e-6)
