"""The `ganomaly` command: one sub-command per pipeline stage.

    ganomaly ingest --config configs/default.yaml --run default --set data.seed=1
    ganomaly run --config configs/default.yaml          # all five stages
    ganomaly resolve --config configs/default.yaml      # writes the resolved config
    ganomaly stages                                     # what each stage reads and writes

Errors in the user's input print one line, ``ganomaly STAGE: error: ...``,
and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import yaml

from pipeline.core import artifacts, stages
from pipeline.core.config import Config, dump_config, load_config
from pipeline.core.errors import PipelineError

STAGES = stages.STAGE_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganomaly", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=(*STAGES, "run", "resolve", "stages"))
    parser.add_argument("--config", default="configs/default.yaml", help="experiment YAML")
    parser.add_argument("--run", default=None, help="run name (default: the config's stem)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.epochs=3 (repeatable)",
    )
    return parser


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrites ``path`` only when its content changes, so make sees a true mtime."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def resolve(config: Config, run_path: Path) -> None:
    """Writes ``config.yaml`` and one stamp per stage holding the sections it depends on."""
    _write_if_changed(run_path / "config.yaml", dump_config(config))
    full = config.to_dict()
    for stage in stages.STAGES:
        text = yaml.safe_dump({s: full[s] for s in stage.sections}, sort_keys=False)
        _write_if_changed(run_path / ".stamps" / f"{stage.name}.yaml", text)


def describe_stages() -> str:
    """The stage table in words: what each stage reads and writes."""
    lines = []
    for stage in stages.STAGES:
        reads = ", ".join(stage.reads) or "data.source"
        lines.append(f"{stage.name}: {stage.summary} (reads {reads})")
        lines += [f"  {output.name:34} {output.what}" for output in stage.writes]
    return "\n".join(lines)


def run_stage(stage: str, config: Config, run_name: str, run_path: Path) -> None:
    """Runs one stage inside the pipeline run's MLflow run.

    The stage gets the finished folders of the stages it reads (the stage
    table) and a temporary folder that replaces ``run_path/stage`` on success.
    """
    from pipeline import tracking  # noqa: PLC0415 - keeps `resolve` fast

    # Fail fast, before the slow imports, when a stage it reads is missing.
    inputs = {name: artifacts.require_stage(run_path, name) for name in stages.stage(stage).reads}
    module = importlib.import_module(f"components.{stage}")
    print(f"[{stage}] run {run_name!r} -> {run_path / stage}", flush=True)
    with tracking.stage_run(config, run_name, run_path, stage):
        with artifacts.stage_output(run_path, stage) as out:
            module.run(config, inputs, out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = load_config(args.config, args.overrides)
        run_name = args.run or Path(args.config).stem
        run_path = artifacts.run_dir(run_name)
        if args.stage == "resolve":
            resolve(config, run_path)
            return 0
        if args.stage == "stages":
            print(describe_stages())
            return 0
        for stage in STAGES if args.stage == "run" else (args.stage,):
            run_stage(stage, config, run_name, run_path)
    except PipelineError as err:
        print(f"ganomaly {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ganomaly {args.stage}: interrupted; nothing was moved into place", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
