"""models.scorer.Scorer: calibration, standardised scores, each kind's maps, statistics files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.ganomaly import GANomaly
from models.options import MAPS_OF_KIND, SCORE_KINDS, ScoreOptions
from models.scorer import Scorer

SMALL = {"isize": 32, "channels": 1, "options": {"nz": 8, "ngf": 8, "ndf": 8}}


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, 1)).astype("float32")


def _np(outputs: dict) -> dict:
    return {k: np.asarray(v) for k, v in outputs.items()}


@pytest.fixture(scope="module")
def model():
    """A small GANomaly fitted for two steps, so its reconstructions are not trivial."""
    keras.utils.set_random_seed(0)
    # With a defect head, so that every score kind can be scored.
    model = GANomaly(**{**SMALL, "options": {**SMALL["options"], "defect_head": True}})
    model.compile(
        g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        h_optimizer=keras.optimizers.Adam(2e-4),
    )
    model.fit(_images(8, seed=0), batch_size=4, epochs=1, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def calibration():
    return [_images(4, seed=1), _images(4, seed=2)]


def _calibrated(model, calibration, **options) -> tuple[Scorer, dict]:
    scorer = Scorer(model, ScoreOptions(**options))
    return scorer, scorer.calibrate(calibration)


@pytest.mark.parametrize(
    "options, name, value",
    [
        ({"kind": "foo"}, "kind", "foo"),
        ({"smoothing_sigma": -0.5}, "smoothing_sigma", -0.5),
        ({"head_smoothing_sigma": -1.0}, "head_smoothing_sigma", -1.0),
        ({"topk_fraction": 0.0}, "topk_fraction", 0.0),
        ({"topk_fraction": 1.5}, "topk_fraction", 1.5),
    ],
)
def test_bad_options_are_refused_quoting_the_value(model, options, name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b.*{value!r}$"):
        Scorer(model, options)


def test_calibrate_standardises_the_calibration_scores(model, calibration):
    scorer, stats = _calibrated(model, calibration, kind="residual", pixel_norm=False)
    assert stats["images"] == 8
    np.testing.assert_allclose(
        scorer.score_mean.numpy(), [stats["latent_mean"], stats["map_score_mean"]], rtol=1e-5
    )
    np.testing.assert_allclose(
        scorer.score_std.numpy(), [stats["latent_std"], stats["map_score_std"]], rtol=1e-5
    )
    # Global (not per-pixel) statistics: one value over the whole residual map.
    np.testing.assert_allclose(scorer.map_mean.numpy()[0], stats["residual_map_mean"], rtol=1e-5)
    np.testing.assert_allclose(scorer.map_std.numpy()[0], stats["residual_map_std"], rtol=1e-5)
    assert min(stats["latent_std"], stats["map_score_std"], stats["residual_map_std"]) > 0
    out = _np(scorer.score(np.concatenate(calibration)))
    for part in ("latent", "map_score", "anomaly_map"):
        assert out[part].mean() == pytest.approx(0.0, abs=1e-3), part
        assert out[part].std() == pytest.approx(1.0, abs=1e-3), part
    np.testing.assert_array_equal(out["score"], out["map_score"])
    assert out["anomaly_map"].shape == (8, 32, 32)


def test_latent_kind_scores_the_latent_distance(model, calibration):
    scorer, _ = _calibrated(model, calibration, kind="latent")
    out = _np(scorer.score(np.concatenate(calibration)))
    np.testing.assert_array_equal(out["score"], out["latent"])
    assert not np.allclose(out["score"], out["map_score"])


def test_calibrate_accepts_labelled_batches_and_rejects_no_images(model, calibration):
    _, expected = _calibrated(model, calibration)
    images = np.concatenate(calibration)
    labelled = tf.data.Dataset.from_tensor_slices((images, np.zeros(8))).batch(4)
    stats = Scorer(model).calibrate(labelled)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    with pytest.raises(ValueError, match="at least one"):
        Scorer(model).calibrate([])


def test_pixel_norm_calibration_varies_per_pixel_around_the_global_mean(model, calibration):
    scorer, stats = _calibrated(model, calibration, kind="residual", pixel_norm=True)
    residual_mean = scorer.map_mean.numpy()[0]
    assert residual_mean.shape == (32, 32)
    assert residual_mean.std() > 0  # one value per pixel position
    # Shrinking each pixel's mean towards the global one keeps their average.
    assert residual_mean.mean() == pytest.approx(stats["residual_map_mean"], rel=1e-4)
    out = _np(scorer.score(np.concatenate(calibration)))
    assert out["map_score"].mean() == pytest.approx(0.0, abs=1e-3)
    assert out["map_score"].std() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_each_kind_computes_only_its_maps(model, kind):
    scorer = Scorer(model, ScoreOptions(kind=kind))
    raw = scorer.raw_scores(_images(2, seed=3))
    assert set(raw) == {"latent", "reconstruction", *MAPS_OF_KIND[kind]}
    assert scorer.map_mean.shape == (len(MAPS_OF_KIND[kind]), 32, 32)
    # The discriminator and the head are part of the scorer (and of an export) only when read.
    assert (scorer.discriminator is not None) == (kind == "discriminator")
    assert (scorer.head is not None) == ("head" in MAPS_OF_KIND[kind])


def test_the_head_map_has_its_own_smoothing(model):
    images = _images(2, seed=4)

    def raw(**options):
        return _np(Scorer(model, ScoreOptions(kind="head_residual", **options)).raw_scores(images))

    sharp = raw(smoothing_sigma=2.0, head_smoothing_sigma=0.0)
    blurred = raw(smoothing_sigma=2.0, head_smoothing_sigma=2.0)
    residual_changed = raw(smoothing_sigma=1.0, head_smoothing_sigma=0.0)
    logits = np.asarray(model.head([images, sharp["reconstruction"]], training=False))
    # Unsmoothed, the head's map is its logits; smoothed, it is their blur.
    np.testing.assert_allclose(sharp["head"], logits, rtol=1e-5, atol=1e-5)
    assert blurred["head"].std() < 0.9 * sharp["head"].std()
    # score.smoothing_sigma smooths the generator's maps only.
    np.testing.assert_allclose(residual_changed["head"], sharp["head"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(residual_changed["residual"], sharp["residual"])
    np.testing.assert_allclose(blurred["residual"], sharp["residual"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "combined, parts", [("combined", ("residual", "ssim")), ("head_residual", ("head", "residual"))]
)
def test_a_combined_map_is_the_mean_of_its_standardised_maps(model, calibration, combined, parts):
    images = np.concatenate(calibration)
    maps = {
        kind: _np(_calibrated(model, calibration, kind=kind)[0].score(images))["anomaly_map"]
        for kind in (*parts, combined)
    }
    assert not np.allclose(maps[parts[0]], maps[parts[1]])
    np.testing.assert_allclose(
        maps[combined], 0.5 * (maps[parts[0]] + maps[parts[1]]), rtol=1e-5, atol=1e-5
    )


def test_discriminator_kind_has_its_own_map_and_scores_images_alone_as_in_a_batch(
    model, calibration
):
    images = np.concatenate(calibration)
    scorer, _ = _calibrated(model, calibration, kind="discriminator")
    out = _np(scorer.score(images))
    assert out["map_score"].mean() == pytest.approx(0.0, abs=1e-3)
    assert out["map_score"].std() == pytest.approx(1.0, abs=1e-3)
    residual = _np(_calibrated(model, calibration, kind="residual")[0].score(images))
    assert not np.allclose(out["anomaly_map"], residual["anomaly_map"])
    alone = _np(scorer.score(images[2:3]))  # inference mode: no batch statistics
    np.testing.assert_allclose(alone["anomaly_map"][0], out["anomaly_map"][2], atol=1e-4)


def test_score_of_one_image_equals_its_score_in_a_batch(model, calibration):
    scorer, _ = _calibrated(model, calibration)
    images = _images(6, seed=7)
    batch = _np(scorer.score(images))
    for i in (0, 3, 5):
        alone = _np(scorer.score(images[i : i + 1]))
        for key in ("score", "latent", "map_score"):
            np.testing.assert_allclose(alone[key][0], batch[key][i], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(alone["anomaly_map"][0], batch["anomaly_map"][i], atol=1e-4)
        np.testing.assert_allclose(
            alone["reconstruction"][0], batch["reconstruction"][i], atol=1e-5
        )


def test_saved_statistics_restore_the_scores(model, calibration, tmp_path):
    scorer, _ = _calibrated(model, calibration, kind="combined")
    path = tmp_path / "score_statistics.npz"
    scorer.save_statistics(path)
    images = _images(4, seed=9)
    clone = Scorer(model, ScoreOptions(kind="combined"))
    fresh = _np(clone.score(images))
    clone.load_statistics(path)
    original, loaded = _np(scorer.score(images)), _np(clone.score(images))
    assert not np.allclose(fresh["score"], original["score"])  # loading did something
    for key in ("score", "latent", "map_score", "anomaly_map"):
        np.testing.assert_array_equal(loaded[key], original[key], err_msg=key)


def test_statistics_of_another_kind_are_refused_naming_both(model, calibration, tmp_path):
    scorer, _ = _calibrated(model, calibration, kind="residual")
    path = tmp_path / "score_statistics.npz"
    scorer.save_statistics(path)
    with pytest.raises(ValueError, match=r"score kind 'residual'.*not of 'ssim'"):
        Scorer(model, ScoreOptions(kind="ssim")).load_statistics(path)
