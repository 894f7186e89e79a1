"""Building the model and the scorer from a config, and loading what earlier stages saved.

    model = modeling.build_model(config)
    modeling.load_weights(model, inputs["train"] / "model.weights.h5")
    scorer = modeling.build_scorer(config, model)

Stages build models only through here, so no stage imports another stage.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from models.ganomaly import GANomaly
from models.scorer import Scorer
from models.tiling import TileGrid
from pipeline.core.config import Config
from pipeline.core.errors import PipelineError

WEIGHTS_FILE = "model.weights.h5"
STATISTICS_FILE = "score_statistics.npz"


def build_model(config: Config) -> GANomaly:
    """The GANomaly that ``config`` describes (weights freshly initialised)."""
    return GANomaly(
        isize=config.preprocess.isize,
        channels=config.preprocess.channels,
        options=config.model,
        seed=config.train.seed,
    )


def build_scorer(config: Config, model: GANomaly) -> Scorer:
    """The scorer of ``config.score`` over ``model``'s networks (statistics not yet set).

    With ``preprocess.tiles`` the config must hold the resolved ``tiles_image``
    (``records.with_resolved_spec``).
    """
    return Scorer(model, config.score, grid=TileGrid.of(dataclasses.asdict(config.preprocess)))


def load_weights(model: GANomaly, path: Path) -> None:
    """Loads saved weights; a file that does not fit the model is a one-line error."""
    # Keras warns about every container it cannot match before it raises; those
    # warnings ("layers will retain their freshly-initialized weights") would only
    # bury the error, so they are held back and shown only if the load succeeds.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except ValueError as error:
            raise PipelineError(
                f"{path}: does not fit this model (saved by another version of the project "
                "or other model settings); run the train stage again"
            ) from error
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def load_trained(config: Config, train_dir: Path) -> GANomaly:
    """The model of ``config`` with the train stage's best weights."""
    model = build_model(config)
    load_weights(model, Path(train_dir) / WEIGHTS_FILE)
    return model


def load_scorer(config: Config, train_dir: Path, evaluate_dir: Path) -> Scorer:
    """The trained model's scorer with the evaluate stage's frozen statistics."""
    scorer = build_scorer(config, load_trained(config, train_dir))
    path = Path(evaluate_dir) / STATISTICS_FILE
    try:
        scorer.load_statistics(path)
    except ValueError as error:
        raise PipelineError(f"{error}; run the evaluate stage again") from None
    return scorer
