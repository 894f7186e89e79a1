"""Compares every score kind on one trained run, without retraining.

    python -m pipeline.score_table --config configs/mvtec.yaml --run mt --set data.source=PATH

Loads ``artifacts/<run>/train/model.weights.h5`` and, for each ``score.kind``
with and without ``score.pixel_norm``, calibrates on the validation normals,
thresholds on validation and scores the test split, as the evaluate stage
does. Prints a markdown table: image AUROC, pixel AUROC, AUPRO, F1 at the
validation threshold and F1 oracle. Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pipeline import artifacts
from pipeline.config import load_config
from pipeline.errors import PipelineError


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def score_table(config, run_path) -> list[str]:
    """The markdown rows, one per (kind, pixel_norm)."""
    from components.evaluate import evaluate_model  # noqa: PLC0415 - imports TensorFlow
    from components.train import build_model, load_weights  # noqa: PLC0415
    from models import scoring  # noqa: PLC0415

    preprocess_dir = artifacts.require_stage(run_path, "preprocess")
    weights = artifacts.require_stage(run_path, "train") / "model.weights.h5"
    rows = [
        "| score.kind | pixel_norm | image AUROC | pixel AUROC | AUPRO | F1 (val threshold) "
        "| F1 oracle |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for kind in scoring.SCORE_KINDS:
        for pixel_norm in (False, True):
            score = dataclasses.replace(config.score, kind=kind, pixel_norm=pixel_norm)
            trial = dataclasses.replace(config, score=score)
            model = build_model(trial)
            load_weights(model, weights)
            r = evaluate_model(model, trial, preprocess_dir)["result"]
            rows.append(
                f"| {kind} | {pixel_norm} | {_fmt(r['image_auroc'])} | {_fmt(r['pixel_auroc'])} "
                f"| {_fmt(r['aupro'])} | {_fmt(r['f1'])} | {_fmt(r['f1_oracle'])} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.score_table")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--run", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = load_config(args.config, args.overrides)
        run_name = args.run or os.path.splitext(os.path.basename(args.config))[0]
        score_table(config, artifacts.run_dir(run_name))
    except PipelineError as err:
        print(f"score_table: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
