"""`ganomaly monitor`: the input checks of several prediction runs, as a table and a plot.

    ganomaly monitor --history predictions/ [--plot predictions/monitor.png]

``--history`` is a folder of ``ganomaly predict`` output folders (each with its
``drift.json``; searched recursively, so ``predictions/<line>/<day>/`` works too).
Prints one row per run, oldest first: when, the folder, images, how many were out of
the acquisition range (``input_ok`` 0), the share flagged, and what drifted. Writes a
plot (default ``<history>/monitor.png``): per statistic, each run's median against
the training normals' median and 1-99% range, drifted runs in red.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.drift import FLAGGED, REPORT_FILE


class MonitorError(Exception):
    """A problem with the command's arguments or the reports: one line for the user."""


def load_reports(history: Path) -> list[tuple[Path, dict]]:
    """``(run folder, drift.json)`` of every prediction run under ``history``, oldest first."""
    if not history.is_dir():
        raise MonitorError(f"{history}: no such folder")
    reports = []
    for path in sorted(history.rglob(REPORT_FILE)):
        try:
            reports.append((path.parent, json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            raise MonitorError(f"{path}: not a drift report ({err})") from None
    if not reports:
        raise MonitorError(f"{history}: no {REPORT_FILE} in it (run ganomaly predict --out there)")
    return sorted(reports, key=lambda item: (item[1].get("created", ""), str(item[0])))


def _row(index: int, folder: Path, report: dict, history: Path) -> list[str]:
    name = str(folder.relative_to(history)) if folder != history else "."
    images = report.get("images", 0)
    if report.get("drifted") is None:
        return [str(index), report.get("created", "")[:16], name, str(images), "", "", "checks off"]
    flagged = report.get(FLAGGED, {}).get("share")
    return [
        str(index),
        report["created"][:16],
        name,
        str(images),
        str(report["input_not_ok"]),
        "" if flagged is None else f"{flagged:.1%}",
        ", ".join(report["drifted"]) or "-",
    ]


def table(reports: list[tuple[Path, dict]], history: Path) -> str:
    """The runs as a plain-text table, one row each."""
    header = ["#", "when", "run", "images", "not ok", "flagged", "drifted"]
    rows = [header, *(_row(i, *item, history) for i, item in enumerate(reports))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def _statistics(reports: list[tuple[Path, dict]]) -> list[str]:
    names: list[str] = []
    for _, report in reports:
        names += [n for n in report.get("statistics", {}) if n not in names]
    return names


def plot(reports: list[tuple[Path, dict]], path: Path) -> None:
    """Each statistic's run medians against the training range; drifted runs in red."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = _statistics(reports)
    if not names:
        raise MonitorError("no run with input checks: nothing to plot (drift checks were off)")
    cols = min(4, len(names) + 1)
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        points = [
            (i, r["statistics"][name])
            for i, (_, r) in enumerate(reports)
            if name in r.get("statistics", {})
        ]
        low, high = points[-1][1]["training_range"]
        ax.axhspan(low, high, color="0.9", label="training 1-99%")
        ax.axhline(points[-1][1]["training_median"], color="0.5", lw=1, label="training median")
        for i, figures in points:
            ax.plot(
                i, figures["median"], "o", color="tab:red" if figures["drifted"] else "tab:blue"
            )
        _label(ax, name, len(reports))
    _flagged_panel(list(axes.flat)[len(names)], reports)
    for ax in list(axes.flat)[len(names) + 1 :]:
        ax.axis("off")
    fig.suptitle("run medians (red: drifted) against the training normals", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(ax, title: str, runs: int) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(runs))
    ax.set_xlabel("run # (the table's)", fontsize=7)
    ax.tick_params(labelsize=7)


def _flagged_panel(ax, reports: list[tuple[Path, dict]]) -> None:
    """The share flagged in each run against the validation normals' false alarms."""
    for i, (_, report) in enumerate(reports):
        figures = report.get(FLAGGED)
        if figures:
            ax.axhline(figures["validation_share"], color="0.5", lw=1)
            ax.plot(i, figures["share"], "o", color="tab:red" if figures["drifted"] else "tab:blue")
    _label(ax, f"{FLAGGED} (line: validation normals)", len(reports))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganomaly monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--history", required=True, type=Path, help="folder of predict outputs")
    parser.add_argument("--plot", type=Path, default=None, help="default: <history>/monitor.png")
    args = parser.parse_args(argv)
    try:
        reports = load_reports(args.history)
        print(table(reports, args.history))
        target = args.plot or args.history / "monitor.png"
        plot(reports, target)
    except MonitorError as err:
        print(f"ganomaly monitor: error: {err}", file=sys.stderr)
        return 2
    print(f"[monitor] {len(reports)} runs -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
