"""Compares every score kind on one trained run, without retraining.

    python -m pipeline.score_table --config configs/mvtec.yaml --run mt --set data.source=PATH

Loads ``artifacts/<run>/train/model.weights.h5`` and, for each ``score.kind``
with and without ``score.pixel_norm``, calibrates on the validation normals,
thresholds on validation and scores the test split, as the evaluate stage
does. Prints a markdown table: image AUROC, pixel AUROC, AUPRO, F1 at the
validation threshold, F1 oracle and the pixel AUROC of each defect type.
The ``head`` kinds are included when the run's model has a defect head;
``--kinds residual,head`` limits the table. Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from models.options import MAPS_OF_KIND, SCORE_KINDS
from pipeline.core import artifacts
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError

HEADER = [
    "| score.kind | pixel_norm | image AUROC | pixel AUROC | AUPRO | F1 (val threshold) "
    "| F1 oracle | pixel AUROC per defect type |",
    "|---|---|---|---|---|---|---|---|",
]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def row(kind: str, pixel_norm: bool, result: dict, pixel_per_type: dict | None = None) -> str:
    """One markdown row from an evaluation's ``metrics.json`` content (and per-type pixels)."""
    r = result
    types = ", ".join(f"{t} {_fmt(v)}" for t, v in sorted((pixel_per_type or {}).items()))
    return (
        f"| {kind} | {pixel_norm} | {_fmt(r['image_auroc'])} | {_fmt(r['pixel_auroc'])} "
        f"| {_fmt(r['aupro'])} | {_fmt(r['f1'])} | {_fmt(r['f1_oracle'])} | {types} |"
    )


def score_table(config, run_path, kinds=None) -> list[str]:
    """The markdown rows, one per (kind, pixel_norm), from the run's trained model.

    ``kinds``: the score kinds to compare; None for every kind the model can score.
    """
    from components.evaluate import evaluate_scorer, pixel_auroc_per_type  # noqa: PLC0415
    from pipeline.core import modeling, records  # noqa: PLC0415

    preprocess_dir = artifacts.require_stage(run_path, "preprocess")
    config = records.with_resolved_spec(config, preprocess_dir)
    model = modeling.load_trained(config, artifacts.require_stage(run_path, "train"))
    scorable = [k for k in SCORE_KINDS if model.head is not None or "head" not in MAPS_OF_KIND[k]]
    if kinds is None:
        kinds = scorable
    refused = [k for k in kinds if k not in scorable]
    if refused:
        raise PipelineError(
            f"--kinds {','.join(refused)}: this run's model scores only {', '.join(scorable)}"
        )
    rows = list(HEADER)
    print("\n".join(rows), flush=True)
    for kind in kinds:
        for pixel_norm in (False, True):
            score = dataclasses.replace(config.score, kind=kind, pixel_norm=pixel_norm)
            trial = dataclasses.replace(config, score=score)
            scorer = modeling.build_scorer(trial, model)
            evaluation = evaluate_scorer(scorer, trial, preprocess_dir)
            per_type = pixel_auroc_per_type(evaluation.test)
            rows.append(row(kind, pixel_norm, evaluation.result, per_type))
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.score_table")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--run", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--kinds", default=None, help="comma-separated score kinds (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = load_config(args.config, args.overrides)
        run_name = args.run or os.path.splitext(os.path.basename(args.config))[0]
        kinds = args.kinds.split(",") if args.kinds else None
        score_table(config, artifacts.run_dir(run_name), kinds)
    except PipelineError as err:
        print(f"score_table: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
