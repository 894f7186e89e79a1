"""The stage table: what each pipeline stage reads, which config it depends on, what it writes.

    python3 pipeline/core/stages.py        # the Makefile's stage rules: name=read1,read2

The one declaration the rest follows: the CLI runs stages in this order and
hands each one only the folders of the stages it reads (each checked for
``_SUCCESS``); ``ganomaly resolve`` writes one stamp per stage from its
sections; the Makefile builds its rules from this file's output; and a stage's
temporary folder is moved into place only if every file in it is declared
here. Standard library only: make runs it with the system Python.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """A file or folder (``name/``) a stage writes; ``name`` may be a glob."""

    name: str
    what: str
    required: bool = True


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``artifacts/<run>/<name>/``, made by ``components.<name>``."""

    name: str
    reads: tuple[str, ...]
    sections: tuple[str, ...]  # config sections, or single keys (``section.key``)
    writes: tuple[Output, ...]
    summary: str

    def undeclared(self, entries: list[tuple[str, bool]]) -> list[str]:
        """The top-level entries ``(name, is_folder)`` that no output declares."""
        return [
            name + ("/" if is_folder else "")
            for name, is_folder in entries
            if not any(_matches(output.name, name, is_folder) for output in self.writes)
        ]

    def missing(self, entries: list[tuple[str, bool]]) -> list[str]:
        """The required outputs that none of ``entries`` provides."""
        return [
            output.name
            for output in self.writes
            if output.required and not any(_matches(output.name, *entry) for entry in entries)
        ]


def _matches(pattern: str, name: str, is_folder: bool) -> bool:
    if pattern.endswith("/") != is_folder:
        return False
    return fnmatch.fnmatchcase(name, pattern.rstrip("/"))


_DATA = ("data",)
_PREPROCESS = (*_DATA, "preprocess")
_TRAIN = (*_PREPROCESS, "model", "train")
_EVALUATE = (*_TRAIN, "score", "threshold", "evaluate")

STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        reads=(),
        sections=_DATA,
        summary="read, check and split the dataset",
        writes=(
            Output("manifest.csv", "one row per accepted image: path, split, label, sha256, ..."),
            Output("rejected.csv", "files set aside (data.on_bad_file: skip), and why"),
            Output("report.md", "the dataset report"),
            Output("image_sizes.png", "image size histogram"),
            Output("samples.png", "sample images with their masks"),
        ),
    ),
    Stage(
        "preprocess",
        reads=("ingest",),
        # The defect head's size: preprocess stores the images at it too.
        sections=(*_PREPROCESS, "model.head_isize", "model.head_aspect", "model.head_size"),
        summary="preprocess into TFRecords",
        writes=(
            Output("preprocess.json", "the preprocessing spec and each split's shards and counts"),
            Output("*.tfrecord", "model inputs, ROI and ground-truth masks (the map size)"),
            Output("input_statistics.csv", "per image its input statistics (brightness, ...)"),
            Output("input_statistics.json", "the training normals' input statistics (reference)"),
        ),
    ),
    Stage(
        "train",
        reads=("preprocess",),
        sections=_TRAIN,
        summary="fit GANomaly on the training normals",
        writes=(
            Output("model.weights.h5", "the weights of the best validation epoch"),
            Output("checkpoints/", "last.weights.h5, the latest epoch"),
            Output("model.json", "the model's get_config()"),
            Output("train.json", "training time, best epoch and its validation loss"),
            Output("history.csv", "losses per epoch"),
            Output(
                "synthetic_anomalies.png",
                "each synthetic anomaly kind and its mask (train.synthetic_anomalies > 0)",
                required=False,
            ),
        ),
    ),
    Stage(
        "evaluate",
        reads=("ingest", "preprocess", "train"),
        sections=_EVALUATE,
        summary="score the test split, write metrics and the report",
        writes=(
            Output("metrics.json", "image and pixel metrics at the validation threshold"),
            Output("auroc_per_defect_type.json", "image AUROC of each defect type"),
            Output("pixel_auroc_per_defect_type.json", "pixel AUROC of each defect type"),
            Output("scores.csv", "per test image its scores and decision"),
            Output("score_statistics.npz", "the scorer's frozen validation statistics"),
            Output("scoring.json", "score options, image and pixel thresholds, statistics"),
            Output("regions.csv", "defect regions in original image pixels"),
            Output("suspects.csv", "training and validation normals by score, highest first"),
            Output("report.md", "the inspection report"),
            Output("roc.png", "ROC curve", required=False),
            Output("pr.png", "precision-recall curve", required=False),
            Output("score_histogram.png", "scores per defect type against the normals"),
            Output("overlays/", "gallery overlays of the worst cases", required=False),
        ),
    ),
    Stage(
        "export",
        reads=("preprocess", "train", "evaluate"),
        sections=(*_EVALUATE, "export"),
        summary="write the SavedModel for TF Serving",
        writes=(
            Output("*/", "<model_name>/<version>/: every exported version, never overwritten"),
            Output("models.config", "TF Serving's model config listing the model"),
            Output("scoring.json", "the thresholds the newest version applies"),
        ),
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
BY_NAME = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]


def make_rules() -> list[str]:
    """One ``name=read1,read2`` line per stage, in order (the Makefile's input)."""
    return [f"{s.name}={','.join(s.reads)}" for s in STAGES]


if __name__ == "__main__":
    sys.stdout.write(" ".join(make_rules()) + "\n")
