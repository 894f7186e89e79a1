"""models.fused_adam.FusedAdam: Keras' Adam, step for step, in one kernel per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.fused_adam import FusedAdam


def _train(optimizer, steps: int = 5) -> list[np.ndarray]:
    """A few steps on a small dense model with fixed data; returns weights and slots."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))

    for _ in range(steps):
        step()
    return [w.numpy() for w in model.weights] + [v.numpy() for v in optimizer.variables]


def test_one_step_is_adams_formula_in_float64_to_float32_rounding():
    # Adam's first step: m = (1 - b1) g, v = (1 - b2) g^2, and the update
    # lr sqrt(1 - b2) / (1 - b1) m / (sqrt(v) + eps); eps matters for the small gradients.
    gradient = np.array([1e-3, -2e-2, 3e-1, 1e-5])
    m, v = 0.5 * gradient, 0.001 * gradient**2
    expected = -1e-2 * np.sqrt(0.001) / 0.5 * m / (np.sqrt(v) + 1e-7)
    variable = keras.Variable(np.zeros(4, "float32"))
    optimizer = FusedAdam(1e-2, beta_1=0.5)
    optimizer.apply_gradients([(tf.constant(gradient, "float32"), variable)])
    np.testing.assert_allclose(variable.numpy(), expected, rtol=2e-6)


def test_training_matches_keras_adam_to_float_rounding():
    # Keras' ten-op update rounds more (about 6e-6 relative per step here): same formula.
    expected = _train(keras.optimizers.Adam(1e-2, beta_1=0.5))
    fused = _train(FusedAdam(1e-2, beta_1=0.5))
    assert len(fused) == len(expected)
    for got, want in zip(fused, expected):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    assert not np.allclose(expected[0], _train(keras.optimizers.Adam(1e-2), steps=0)[0])


def test_a_changed_learning_rate_is_used():
    # the train stage halves learning rates on a NaN rollback by assigning them
    optimizer = FusedAdam(1e-2)
    optimizer.learning_rate.assign(0.0)
    frozen = _train(optimizer)
    initial = _train(keras.optimizers.Adam(0.0), steps=0)
    np.testing.assert_array_equal(frozen[0], initial[0])


def test_config_round_trips_and_amsgrad_takes_keras_path():
    optimizer = FusedAdam(3e-4, beta_1=0.5, amsgrad=True)
    again = FusedAdam.from_config(optimizer.get_config())
    assert again.get_config() == optimizer.get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, FusedAdam)
    expected = _train(keras.optimizers.Adam(1e-2, amsgrad=True))
    np.testing.assert_allclose(_train(FusedAdam(1e-2, amsgrad=True))[0], expected[0], rtol=1e-6)


@pytest.mark.parametrize("beta_1", [0.5, 0.9])
def test_beta_1_is_honoured(beta_1):
    expected = _train(keras.optimizers.Adam(1e-2, beta_1=beta_1))
    np.testing.assert_allclose(_train(FusedAdam(1e-2, beta_1=beta_1))[0], expected[0], rtol=2e-4)
