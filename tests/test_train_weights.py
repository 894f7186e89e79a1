"""components.train.load_weights: weights that do not fit the model are a one-line error."""

import warnings

import keras
import numpy as np
import pytest

from components.train import load_weights
from models.ganomaly import GANomaly
from pipeline.errors import PipelineError

SMALL = {"isize": 32, "channels": 1, "nz": 8, "ndf": 8}


def test_weights_of_the_same_model_load(tmp_path):
    keras.utils.set_random_seed(0)
    model, clone = GANomaly(**SMALL, ngf=8), GANomaly(**SMALL, ngf=8)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    load_weights(clone, path)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "model.weights.h5"
    GANomaly(**SMALL, ngf=8).save_weights(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PipelineError, match=r"model\.weights\.h5: does not fit this model"):
            load_weights(GANomaly(**SMALL, ngf=16), path)
    # Keras' per-container warnings ("Skipping nested container") would bury the error.
    assert [str(w.message) for w in caught] == []
