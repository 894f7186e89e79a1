"""The `ganomaly` command: one sub-command per pipeline stage.

    ganomaly ingest --config configs/default.yaml --run default --set data.seed=1
    ganomaly run --config configs/default.yaml          # all five stages
    ganomaly resolve --config configs/default.yaml      # writes the resolved config
    ganomaly stages                                     # what each stage reads and writes
    ganomaly experiment --config configs/default.yaml   # the run's MLflow experiment (created)
    ganomaly predict --model artifacts/default/export/ganomaly --input DIR --out DIR
    ganomaly monitor --history DIR                      # drift over prediction runs

Errors in the user's input print one line, ``ganomaly STAGE: error: ...``,
and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline.core import artifacts, cluster, stages
from pipeline.core.config import Config, check_source, dump_config, load_config
from pipeline.core.errors import ClusterError, PipelineError

STAGES = stages.STAGE_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganomaly", description=__doc__.split("\n")[0])
    commands = (*STAGES, "run", "resolve", "stages", "experiment", "predict", "monitor")
    parser.add_argument("stage", choices=commands)
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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve: only print the stamps that would change (make -n)",
    )
    parser.add_argument(
        "--sets",
        default="",
        metavar="'KEY=VALUE ...'",
        help="several overrides in one string, separated by spaces (MLproject's `set`)",
    )
    return parser


def _write(path: Path, text: str) -> None:
    """Replaces ``path`` atomically (resolve calls it only when the content changes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _part(full: dict, name: str):
    """A config section, or one key of it (``section.key``)."""
    section, _, key = name.partition(".")
    return full[section][key] if key else full[section]


def stamps(config: Config, run_path: Path) -> dict[Path, str]:
    """``config.yaml`` and one stamp per stage holding the sections it depends on."""
    full = config.to_dict()
    texts = {run_path / "config.yaml": dump_config(config)}
    for stage in stages.STAGES:
        text = yaml.safe_dump({s: _part(full, s) for s in stage.sections}, sort_keys=False)
        texts[run_path / ".stamps" / f"{stage.name}.yaml"] = text
    return texts


def resolve(config: Config, run_path: Path, dry_run: bool = False) -> list[Path]:
    """Writes the stamps whose content changed; returns them (only lists them if ``dry_run``)."""
    changed = {
        path: text
        for path, text in stamps(config, run_path).items()
        if not (path.is_file() and path.read_text() == text)
    }
    if not dry_run:
        for path, text in changed.items():
            _write(path, text)
    return list(changed)


def describe_stages() -> str:
    """The stage table in words: what each stage reads and writes."""
    lines = []
    for stage in stages.STAGES:
        reads = ", ".join(stage.reads) or "data.source"
        lines.append(f"{stage.name}: {stage.summary} (reads {reads})")
        lines += [f"  {output.name:34} {output.what}" for output in stage.writes]
    return "\n".join(lines)


def _experiment(config: Config) -> str:
    """The config's MLflow experiment, created in the store with the project's layout."""
    from pipeline import tracking  # noqa: PLC0415

    tracking.check_store()
    tracking.ensure_experiment(config)
    return config.experiment_name()


def _resolved(config, inputs: dict[str, Path], stage: str = ""):
    """The config a stage runs with: ``auto`` settings resolved, labelled defects' choices.

    ``auto`` settings as the preprocess stage resolved them, and what labelled
    defects turn on.

    MLflow keeps the config as written (``auto``); preprocess.json says what it became.
    The labelled-defect choices are said in one line and, in a stage's MLflow run,
    logged as ``resolved.<key>`` params.
    """
    if "preprocess" not in inputs:
        return config
    from pipeline.core import records  # noqa: PLC0415 - imports TensorFlow

    changes = records.labelled_settings(config, inputs["preprocess"])
    if changes and stage:
        said = ", ".join(f"{key}: {value}" for key, value in changes.items())
        print(f"[{stage}] labelled defects in training: {said}", flush=True)
        import mlflow  # noqa: PLC0415

        if mlflow.active_run() is not None:
            mlflow.log_params({f"resolved.{key}": value for key, value in changes.items()})
    return records.with_resolved_spec(config, inputs["preprocess"])


def run_stage(stage: str, config: Config, run_name: str, run_path: Path) -> None:
    """Runs one stage inside the pipeline run's MLflow run.

    The stage gets the finished folders of the stages it reads (the stage
    table) and a temporary folder that replaces ``run_path/stage`` on success.
    """
    from pipeline import tracking  # noqa: PLC0415 - keeps `resolve` fast

    # Fail fast, before the slow imports and any work or record, when the source
    # does not exist, a stage it reads is missing or the tracking server does not answer.
    check_source(config)
    inputs = {name: artifacts.require_stage(run_path, name) for name in stages.stage(stage).reads}
    tracking.check_store()
    chief = stage != "train" or cluster.is_chief(config)
    module = importlib.import_module(f"components.{stage}")
    if not chief:  # another worker of a training cluster: no records, nothing kept
        print(f"[{stage}] run {run_name!r}: worker of a cluster; the chief writes the output")
        with tempfile.TemporaryDirectory(prefix=f"ganomaly-{stage}-") as out:
            module.run(_resolved(config, inputs), inputs, Path(out))
        return
    print(f"[{stage}] run {run_name!r} -> {run_path / stage}", flush=True)
    with tracking.stage_run(config, run_name, run_path, stage):
        with artifacts.stage_output(run_path, stage) as out:
            module.run(_resolved(config, inputs, stage), inputs, out)
    if hasattr(module, "after_success"):  # e.g. train's resumable state, once in place
        module.after_success(run_path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:  # its own arguments: a model, not a config
        from pipeline import predict  # noqa: PLC0415

        return predict.main(argv[1:])
    if argv[:1] == ["monitor"]:  # prediction runs' drift reports, no config
        from pipeline import monitor  # noqa: PLC0415

        return monitor.main(argv[1:])
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = load_config(args.config, [*args.overrides, *shlex.split(args.sets)])
        run_name = args.run or Path(args.config).stem
        run_path = artifacts.run_dir(run_name)
        if args.stage in ("resolve", "experiment"):
            check_source(config)  # before any stamp or experiment is written
        if args.stage == "resolve":
            changed = resolve(config, run_path, dry_run=args.dry_run)
            if args.dry_run:  # make -n: these stages would run again
                print(" ".join(str(path) for path in changed))
            return 0
        if args.stage == "stages":
            print(describe_stages())
            return 0
        if args.stage == "experiment":
            print(_experiment(config))
            return 0
        for stage in STAGES if args.stage == "run" else (args.stage,):
            run_stage(stage, config, run_name, run_path)
    except PipelineError as err:
        print(f"ganomaly {args.stage}: error: {err}", file=sys.stderr)
        if isinstance(err, ClusterError):  # aborted collectives: no clean shutdown to wait for
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    except KeyboardInterrupt:
        print(f"ganomaly {args.stage}: interrupted; nothing was moved into place", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
