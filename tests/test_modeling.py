"""pipeline.core.modeling: models and scorers from a config; misfit files fail in one line."""

import warnings

import keras
import numpy as np
import pytest

from models.ganomaly import GANomaly
from pipeline.core import modeling
from pipeline.core.errors import PipelineError
from pipeline.core.modeling import load_weights
from tests.conftest import tiny_config

SMALL = {"isize": 32, "channels": 1}


def _small(ngf: int) -> GANomaly:
    return GANomaly(**SMALL, options={"nz": 8, "ngf": ngf, "ndf": 8})


def test_weights_of_the_same_model_load(tmp_path):
    keras.utils.set_random_seed(0)
    model, clone = _small(8), _small(8)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    load_weights(clone, path)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "model.weights.h5"
    _small(8).save_weights(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PipelineError, match=r"model\.weights\.h5: does not fit this model"):
            load_weights(_small(16), path)
    # Keras' per-container warnings ("Skipping nested container") would bury the error.
    assert [str(w.message) for w in caught] == []


def test_model_and_scorer_follow_the_config():
    config = tiny_config("model.ngf=12", "train.seed=5", "score.kind=ssim")
    model = modeling.build_model(config)
    assert (model.isize, model.channels, model.seed) == (32, 1, 5)
    assert model.options is config.model and model.options.ngf == 12
    scorer = modeling.build_scorer(config, model)
    assert scorer.options is config.score and scorer.map_kinds == ("ssim",)


def test_statistics_of_another_score_kind_are_a_one_line_error(tmp_path):
    config = tiny_config()
    model = modeling.build_model(config)
    model.save_weights(tmp_path / modeling.WEIGHTS_FILE)
    scorer = modeling.build_scorer(config, model)
    scorer.save_statistics(tmp_path / modeling.STATISTICS_FILE)
    other = tiny_config("score.kind=discriminator")
    with pytest.raises(PipelineError, match=r"score_statistics\.npz: .*run the evaluate stage"):
        modeling.load_scorer(other, tmp_path, tmp_path)
