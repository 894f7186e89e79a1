"""models.ganomaly.GANomaly: arguments, config, training steps, re-initialisation."""

import re

import keras
import numpy as np
import pytest

from models import ganomaly
from models.ganomaly import GANomaly
from models.options import ModelOptions

SMALL = {"isize": 32, "channels": 1, "options": {"nz": 8, "ngf": 8, "ndf": 8}}
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
    """A small GANomaly fitted for two steps (batch 4 of 8 images)."""
    keras.utils.set_random_seed(0)
    model = _compile(GANomaly(**SMALL))
    before_g = _snapshot(model.generator.trainable_weights)
    before_d = _snapshot(model.discriminator.trainable_weights)
    history = model.fit(_images(8), batch_size=4, epochs=1, verbose=0, shuffle=False).history
    after_fit = {
        "g": _snapshot(model.generator.trainable_weights),
        "d": _snapshot(model.discriminator.trainable_weights),
    }
    return {
        "model": model,
        "history": history,
        "before": {"g": before_g, "d": before_d},
        "after_fit": after_fit,
    }


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"isize": 40}, "isize", 40),
        ({"isize": 16}, "isize", 16),
        ({"channels": 2}, "channels", 2),
        ({"options": {"nz": 0}}, "nz", 0),
        ({"options": {"ngf": -1}}, "ngf", -1),
        ({"options": {"ndf": 0}}, "ndf", 0),
        ({"options": {"extra_layers": -1}}, "extra_layers", -1),
    ],
)
def test_constructor_rejects_bad_arguments_quoting_the_value(kwargs, name, value):
    with pytest.raises(ValueError, match=rf"^{name}\b.*{re.escape(repr(value))}$"):
        GANomaly(**{**SMALL, **kwargs})


def test_get_config_round_trips():
    options = ModelOptions(nz=8, ngf=8, ndf=16, extra_layers=1, skip_connections=True)
    model = GANomaly(isize=32, channels=3, options=options, seed=3)
    config = model.get_config()
    expected = {
        "isize": 32,
        "channels": 3,
        "options": {
            "nz": 8,
            "ngf": 8,
            "ndf": 16,
            "extra_layers": 1,
            "skip_connections": True,
            "defect_head": False,
            "head_filters": 16,
            "head_isize": 0,
            "head_aspect": "square",
            "head_size": [],
        },
        "seed": 3,
    }
    assert {k: config[k] for k in expected} == expected
    clone = GANomaly.from_config(config)
    assert clone.get_config() == config
    assert clone.options == options
    assert clone.discriminator.output_shape[1] == (None, 4, 4, 64)


def test_default_options_are_the_papers():
    assert GANomaly().options == ModelOptions(nz=100, ngf=64, ndf=64, extra_layers=0)


def test_weights_are_the_networks_and_nothing_of_scoring(trained):
    # Score statistics live in the scorer: a new map kind cannot change what train saves.
    model = trained["model"]
    networks = {id(w) for w in model.generator.weights + model.discriminator.weights}
    assert len(networks) > 0
    assert [w.path for w in model.weights if id(w) not in networks] == []


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
    # the trackers average per-step values, and g_loss is linear in the parts
    assert values["g_loss"] == pytest.approx(
        values["adv_loss"] + 50.0 * values["con_loss"] + values["enc_loss"], rel=1e-4
    )


def _f64(*tensors) -> list[np.ndarray]:
    return [np.asarray(t, "float64") for t in tensors]


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def test_train_step_reports_the_losses_of_its_batch():
    # One step on one batch: the reported losses are those of the weights before the
    # step, recomputed here in NumPy from the networks' training-mode outputs.
    keras.utils.set_random_seed(2)
    model = _compile(GANomaly(**SMALL))
    images = _images(4, seed=5)
    outputs = model.generator(images, training=True)
    reconstruction, latent_i, latent_o = _f64(*outputs)
    real_logits, real_features, _ = _f64(*model.discriminator(images, training=True))
    fake_logits, fake_features, _ = _f64(*model.discriminator(outputs[0], training=True))
    expected = {
        "adv_loss": np.mean((real_features - fake_features) ** 2),
        "con_loss": np.mean(np.abs(images - reconstruction)),
        "enc_loss": np.mean((latent_i - latent_o) ** 2),
        # BCE with logits: -log(sigmoid(z)) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)
        "d_loss": 0.5 * (np.mean(_softplus(-real_logits)) + np.mean(_softplus(fake_logits))),
    }
    expected["g_loss"] = expected["adv_loss"] + 50.0 * expected["con_loss"] + expected["enc_loss"]
    assert expected["enc_loss"] > 0.0 and expected["adv_loss"] > 0.0  # not trivially equal

    history = model.fit(images, batch_size=4, epochs=1, verbose=0, shuffle=False).history

    reported = {name: history[name][-1] for name in expected}
    assert reported == pytest.approx(expected, rel=1e-4)
    # the step did train: the same batch now gives another encoder loss
    _, latent_i, latent_o = _f64(*model.generator(images, training=True))
    after = np.mean((latent_i - latent_o) ** 2)
    assert after != pytest.approx(expected["enc_loss"], rel=1e-4)


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


def _two_phase_step(model: GANomaly, images) -> None:
    """The original's order: the generator's phase, then the discriminator's, each
    running the discriminator on the real and the fake batch itself."""
    import tensorflow as tf

    from models import losses

    with tf.GradientTape() as tape:
        reconstruction, latent_i, latent_o = model.generator(images, training=True)
        real = model.discriminator(images, training=True)[1]
        fake = model.discriminator(reconstruction, training=True)[1]
        g_loss = losses.generator_loss(
            losses.adversarial_loss(real, fake),
            losses.contextual_loss(images, reconstruction),
            losses.encoder_loss(latent_i, latent_o),
            model.w_adv,
            model.w_con,
            model.w_enc,
        )
    weights = model.generator.trainable_weights
    model.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
    reconstruction = tf.stop_gradient(reconstruction)
    with tf.GradientTape() as tape:
        d_loss = losses.discriminator_loss(
            model.discriminator(images, training=True)[0],
            model.discriminator(reconstruction, training=True)[0],
        )
    weights = model.discriminator.trainable_weights
    model.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))


def test_one_discriminator_pass_per_batch_trains_as_the_two_phase_step():
    # train_step reuses the generator phase's discriminator passes for the
    # discriminator's own loss: after a few steps both networks' weights equal those
    # of the original's two-phase step with its four discriminator passes.
    import tensorflow as tf

    batches = [_images(4, seed=seed) for seed in range(3)]
    models = []
    for step in (tf.function(lambda m, x: m.train_step(x)), _two_phase_step):
        keras.utils.set_random_seed(3)
        model = _compile(GANomaly(**SMALL))
        for images in batches:
            step(model, tf.constant(images))
        models.append(model)
    one_pass, two_phase = models
    for net in ("generator", "discriminator"):
        pairs = zip(
            getattr(one_pass, net).trainable_weights, getattr(two_phase, net).trainable_weights
        )
        for a, b in pairs:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert ganomaly.D_BN_MOMENTUM == pytest.approx(0.81)  # two 0.9 updates folded into one


def _bn_batch_means(discriminator, images) -> list:
    """Each batch-norm layer's input mean over the batch (what its moving mean moves to)."""
    bns = [
        layer
        for layer in discriminator.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    probe = keras.Model(discriminator.inputs, [bn.input for bn in bns])
    return [np.asarray(x).mean(axis=(0, 1, 2)) for x in probe(images, training=True)]


def test_one_discriminator_pass_moves_the_running_statistics_by_its_stated_weights():
    # One step from the same weights. The original (momentum 0.9, four passes: real,
    # fake, real, fake) leaves 0.9^4 m0 + 0.1629 r + 0.181 f; one pass each at 0.81
    # leaves 0.81^2 m0 + 0.1539 r + 0.19 f: the old average decays the same, the two
    # batches' weights differ by 0.009 (r, f: the real and fake batches' means).
    import tensorflow as tf

    images = tf.constant(_images(4, seed=5))
    moving, batch_means = {}, None
    for name in ("one_pass", "original"):
        keras.utils.set_random_seed(3)
        model = _compile(GANomaly(**SMALL))
        bns = [w for w in model.discriminator.weights if "moving_mean" in w.path]
        before = [w.numpy() for w in bns]
        reconstruction = model.generator(images, training=True)[0]
        means = [_bn_batch_means(model.discriminator, x) for x in (images, reconstruction)]
        for w, value in zip(bns, before):  # the probe's own passes moved them: put back
            w.assign(value)
        if name == "original":
            for layer in model.discriminator.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9
            _two_phase_step(model, images)
        else:
            tf.function(lambda m, x: m.train_step(x))(model, images)
        moving[name] = [w.numpy() for w in bns]
        batch_means = batch_means or (before, *means)
    before, real, fake = batch_means
    for i, m0 in enumerate(before):
        expected_one = 0.6561 * m0 + 0.81 * 0.19 * real[i] + 0.19 * fake[i]
        expected_original = 0.6561 * m0 + 0.1 * (0.729 + 0.9) * real[i] + 0.1 * (0.81 + 1) * fake[i]
        np.testing.assert_allclose(moving["one_pass"][i], expected_one, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(moving["original"][i], expected_original, rtol=1e-4, atol=1e-5)
        gap = np.abs(moving["one_pass"][i] - moving["original"][i])
        assert np.all(gap <= 0.0091 * np.abs(real[i] - fake[i]) + 1e-5)
