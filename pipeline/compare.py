"""Compares the runs of an MLflow experiment: the settings that differ, the metrics, best first.

    python -m pipeline.compare --experiment synthetic-valve-seats --metric aupro --csv runs.csv

Reads the experiment's finished and running runs from the tracking store
(``pipeline.tracking.tracking_uri()``: ``MLFLOW_TRACKING_URI`` or the local
sqlite store) and prints one row per run: its name, short id, the config keys
whose values differ between the runs (every key when there is one run) and the
key test metrics, sorted best first by ``--metric`` (highest first; for a
``*loss`` metric lowest first); runs that lack it come last. A key that a
stage rerun changed (a ``config.<key>`` tag, see ``pipeline/tracking.py``)
shows its current value. ``--csv FILE`` also writes the table, ``--plot FILE``
a PNG of each run's validation curves per epoch. An unknown experiment or
metric, or an experiment without runs, is one line ``compare: error: ...``,
exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError

# The test metrics shown for every run (metrics.json names), those that some run has.
KEY_METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1", "f1_oracle")
# Per-epoch validation metrics (step = epoch) drawn by --plot.
CURVES = ("val_con_loss", "val_g_loss")
# Runs in these states are compared; failed, killed and deleted runs are not.
STATUSES = ("FINISHED", "RUNNING")
SHORT_ID = 8


@dataclass(frozen=True)
class RunRecord:
    """What the comparison needs of one MLflow run."""

    run_id: str
    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "FINISHED"
    start_time: int = 0

    @classmethod
    def from_mlflow(cls, run) -> RunRecord:
        """From an ``mlflow.entities.Run``; ``config.<key>`` tags override the logged params."""
        tags = dict(run.data.tags)
        params = dict(run.data.params)
        params.update({k[len("config.") :]: v for k, v in tags.items() if k.startswith("config.")})
        return cls(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id[:SHORT_ID],
            params=params,
            metrics=dict(run.data.metrics),
            tags=tags,
            status=run.info.status,
            start_time=run.info.start_time or 0,
        )


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """The param keys whose values differ between the runs, sorted; every key for one run.

    A key that some runs lack counts as differing.
    """
    keys = sorted({key for run in runs for key in run.params})
    if len(runs) <= 1:
        return keys
    return [key for key in keys if len({run.params.get(key) for run in runs}) > 1]


def lower_is_better(metric: str) -> bool:
    """Losses sort lowest first; every other metric highest first."""
    return metric.endswith("loss")


def sort_runs(runs: Sequence[RunRecord], metric: str) -> list[RunRecord]:
    """Best ``metric`` first (highest, or lowest for a loss); runs without it last, ties newest."""
    sign = 1.0 if lower_is_better(metric) else -1.0

    def order(run: RunRecord) -> tuple:
        value = run.metrics.get(metric)
        missing = value is None or math.isnan(value)
        return (missing, 0.0 if missing else sign * value, -run.start_time)

    return sorted(runs, key=order)


def run_labels(runs: Sequence[RunRecord]) -> list[str]:
    """Run names, with the short id added where two runs share a name."""
    names = [run.name for run in runs]
    return [
        run.name if names.count(run.name) == 1 else f"{run.name} ({run.run_id[:SHORT_ID]})"
        for run in runs
    ]


def comparison_table(runs: Sequence[RunRecord], metric: str = "image_auroc") -> pd.DataFrame:
    """One row per run: name, short id, differing params, key metrics; best ``metric`` first.

    Args:
        runs: the runs to compare.
        metric: the metric to sort by (see ``sort_runs``); runs without it come last.

    Returns:
        Columns ``run``, ``run_id``, the differing params, then those of
        ``KEY_METRICS`` (and ``metric``) that some run has.

    Raises:
        PipelineError: no runs, or no run has ``metric``.
    """
    if not runs:
        raise PipelineError("no runs to compare")
    logged = {name for run in runs for name in run.metrics}
    if metric not in logged:
        known = ", ".join(sorted(logged)) or "none"
        raise PipelineError(f"unknown metric {metric!r}; the runs have: {known}")
    params = differing_params(runs)
    metrics = [m for m in KEY_METRICS if m in logged]
    if metric not in metrics:
        metrics.append(metric)
    rows = [
        {
            "run": run.name,
            "run_id": run.run_id[:SHORT_ID],
            **{key: run.params.get(key) for key in params},
            **{m: run.metrics.get(m, math.nan) for m in metrics},
        }
        for run in sort_runs(runs, metric)
    ]
    return pd.DataFrame(rows, columns=["run", "run_id", *params, *metrics])


def _client():
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - slow import

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking.tracking_uri()
    tracking.check_store(uri)
    database = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None
    if database and not Path(database).is_file():
        raise PipelineError(f"no MLflow store at {database}; run the pipeline first")
    return MlflowClient(uri)


def load_runs(experiment: str, client=None) -> list[RunRecord]:
    """The experiment's finished and running runs, newest first.

    Args:
        experiment: the experiment's name.
        client: an ``MlflowClient``; by default one on ``tracking.tracking_uri()``.

    Raises:
        PipelineError: no such experiment, or it has no finished or running run.
    """
    from mlflow.entities import ViewType  # noqa: PLC0415

    client = client or _client()
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise PipelineError(
            f"unknown experiment {experiment!r} in {client.tracking_uri} "
            f"(known: {', '.join(names) or 'none'})"
        )
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs += [RunRecord.from_mlflow(r) for r in page if r.info.status in STATUSES]
        token = page.token
        if not token:
            break
    if not runs:
        raise PipelineError(f"experiment {experiment!r} has no finished or running runs")
    return runs


def validation_curves(
    runs: Sequence[RunRecord], client=None, metrics: Sequence[str] = CURVES
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per run label (``run_labels``), per metric of ``metrics`` it logged: ``[(epoch, value)]``."""
    client = client or _client()
    curves = {}
    for label, run in zip(run_labels(runs), runs):
        curves[label] = {
            metric: sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, metric))
            for metric in metrics
            if metric in run.metrics
        }
    return curves


def plot_curves(curves: dict[str, dict[str, list[tuple[int, float]]]]):
    """A matplotlib ``Figure``: one panel per validation metric, one line per run.

    Built without pyplot, so it needs no display and leaves the backend alone.

    Raises:
        PipelineError: no run logged any of the curves.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415

    metrics = [m for m in CURVES if any(m in c for c in curves.values())]
    metrics += sorted({m for c in curves.values() for m in c} - set(metrics))
    if not metrics:
        raise PipelineError(f"no run logged a validation curve ({', '.join(CURVES)})")
    fig = Figure(figsize=(5.5 * len(metrics), 4), layout="tight")
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for label, per_metric in curves.items():
            if metric in per_metric:
                steps, values = zip(*per_metric[metric])
                ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.legend(fontsize="small")
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure's PNG bytes, whatever the matplotlib backend."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def run_artifacts_dir(run: RunRecord, root: Path | str | None = None) -> Path:
    """The run's artifacts folder: its ``artifacts_dir`` tag, else ``<root>/<run name>``."""
    from pipeline.core import artifacts  # noqa: PLC0415

    tagged = run.tags.get("artifacts_dir")
    return Path(tagged) if tagged else artifacts.run_dir(run.name, Path(root) if root else None)


def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text: names left-aligned, metrics to three decimals."""
    formatters = {}
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            width = max(len(column), *(len(str(v)) for v in table[column]))
            formatters[column] = lambda v, w=width: "-" if v is None else f"{v!s:<{w}}"
    text = table.to_string(
        index=False,
        na_rep="-",
        float_format=lambda v: f"{v:.3f}",
        formatters=formatters,
        justify="left",
    )
    return "\n".join(line.rstrip() for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", default="configs/default.yaml", help="names the experiment")
    parser.add_argument("--experiment", default=None, help="default: the config's experiment")
    parser.add_argument("--metric", default="image_auroc", help="sort by (best first)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write the table")
    parser.add_argument("--plot", default=None, metavar="FILE", help="PNG of validation curves")
    args = parser.parse_args(argv)
    try:
        experiment = args.experiment or load_config(args.config).experiment_name()
        client = _client()
        runs = load_runs(experiment, client)
        table = comparison_table(runs, args.metric)
        png = None
        if args.plot:
            png = figure_png(plot_curves(validation_curves(runs, client)))
        for path in (args.csv, args.plot):
            if path and not Path(path).parent.is_dir():
                raise PipelineError(f"{path}: folder {Path(path).parent} does not exist")
        if args.csv:
            table.to_csv(args.csv, index=False)
        if png is not None:
            Path(args.plot).write_bytes(png)
    except PipelineError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    order = "lowest" if lower_is_better(args.metric) else "highest"
    print(f"experiment {experiment}: {len(runs)} runs, by {args.metric} ({order} first)")
    print(format_table(table))
    for path in (args.csv, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
