"""Drift: one prediction run's images against what the model was trained and validated on.

    report = drift.compare(stats, flagged, input_ok, card)   # -> drift.json's content
    for line in drift.warnings(report): print(line)

``stats`` are the SavedModel's ``input_statistics`` of every image scored (the
function the preprocess stage ran on the training normals, ``models/input_stats.py``)
and ``card`` its ``assets/ganomaly.json`` with their reference. Two tests per
statistic, each against the training normals' quantiles:

* Kolmogorov-Smirnov: the largest gap between the run's and the training's
  cumulative distributions (``ks``, 0-1), any change of shape or place;
* a rank test (Mann-Whitney's U against the training quantiles): ``shift``, the
  mean training percentile of the run's values minus 0.5 (-0.5 all below, +0.5
  all above), the more sensitive test of a move up or down.

And one of the share of flagged images: the run's flags against the validation
normals' false alarms at the threshold (a binomial test whose rate carries the
validation's own uncertainty: beta-binomial with Jeffreys' prior).

A statistic has drifted when one of its tests is significant at ``ALPHA`` for
the whole run (Bonferroni: each test at ``ALPHA`` / the number of tests) and the
change is large enough to matter (``ks`` >= ``MIN_KS`` or ``|shift|`` >=
``MIN_SHIFT``), so that a run of ten thousand images does not warn of a
difference too small to matter. The training distribution is known only through
its sample: the tests count its size (``count``), not only the run's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scipy import stats as st

# The chance that a run of images like the training normals warns of anything.
ALPHA = 0.05
MIN_KS = 0.1
MIN_SHIFT = 0.05
FLAGGED = "flagged_share"
REPORT_FILE = "drift.json"


def ks_test(values: np.ndarray, quantiles: np.ndarray, n_reference: int) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance of ``values`` to the reference quantiles, and its p-value.

    The quantiles stand for the reference sample (ties kept, so a statistic that
    never varied compares exactly); the p-value is the two-sample one, with the
    effective size ``n m / (n + m)``.
    """
    distance = float(st.ks_2samp(values, quantiles).statistic)
    n_eff = len(values) * n_reference / (len(values) + n_reference)
    return distance, float(st.kstwo.sf(distance, max(1, round(n_eff))))


def rank_test(values: np.ndarray, quantiles: np.ndarray, n_reference: int) -> tuple[float, float]:
    """Mean reference percentile of ``values`` minus 0.5, and its two-sided p-value.

    Mann-Whitney's U over ``n * m`` is the mean of the reference's cumulative
    distribution at the run's values (ties counted half); under no change it is
    0.5 with variance ``(n + m + 1) / (12 n m)`` (ties make this conservative).
    """
    below = np.searchsorted(quantiles, values, "left")
    upto = np.searchsorted(quantiles, values, "right")
    shift = float(np.mean((below + upto) / (2.0 * len(quantiles))) - 0.5)
    n, m = len(values), n_reference
    spread = np.sqrt((n + m + 1) / (12.0 * n * m))
    return shift, float(2.0 * st.norm.sf(abs(shift) / spread))


def _statistic(values: np.ndarray, reference: dict, n_reference: int, level: float) -> dict:
    quantiles = np.asarray(reference["quantiles"], np.float64)
    ks, ks_p = ks_test(values, quantiles, n_reference)
    shift, shift_p = rank_test(values, quantiles, n_reference)
    drifted = (ks_p < level and ks >= MIN_KS) or (shift_p < level and abs(shift) >= MIN_SHIFT)
    return {
        "drifted": bool(drifted),
        "median": float(np.median(values)),
        "training_median": reference["median"],
        "training_range": [float(quantiles[1]), float(quantiles[-2])],  # 1% and 99%
        "ks": ks,
        "ks_p": ks_p,
        "shift": shift,
        "shift_p": shift_p,
    }


def flagged_share(flagged: np.ndarray, validation: dict, level: float) -> dict:
    """The run's flagged images against the validation normals' false alarms (one-sided)."""
    n, k = len(flagged), int(np.sum(flagged))
    count, alarms = validation["count"], validation["false_alarms"]
    # The validation rate is itself an estimate: the predictive distribution of
    # flags among n normals, given `alarms` of `count` (Jeffreys' prior).
    p_value = float(st.betabinom.sf(k - 1, n, alarms + 0.5, count - alarms + 0.5)) if n else 1.0
    return {
        "drifted": bool(p_value < level and k / max(n, 1) > alarms / count),
        "flagged": k,
        "images": n,
        "share": k / max(n, 1),
        "validation_false_alarms": alarms,
        "validation_normals": count,
        "validation_share": alarms / count,
        "p_value": p_value,
    }


def compare(stats: np.ndarray, flagged: np.ndarray, input_ok: np.ndarray, card: dict) -> dict:
    """The drift report of one run: ``drift.json``'s content.

    Args:
        stats: ``[N, S]`` input statistics, in ``card["input_statistics"]["names"]`` order.
        flagged: ``[N]`` the model's decisions (``is_anomaly``).
        input_ok: ``[N]`` the model's input checks.
        card: the model card, with ``input_statistics`` (and ``validation_scores``).
    """
    reference, validation = card["input_statistics"], card.get("validation_scores")
    names = reference["names"]
    stats = np.asarray(stats, np.float64).reshape(len(flagged), len(names))
    tests = 2 * len(names) + (1 if validation else 0)
    level = ALPHA / tests
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_version": card.get("version"),
        "images": len(flagged),
        "alpha": ALPHA,
        "tests": tests,
        "test_level": level,
        "drifted": [],
        "input_not_ok": int(np.sum(~np.asarray(input_ok, bool))),
        "statistics": {},
    }
    if len(flagged) == 0:
        return report
    for index, name in enumerate(names):
        figures = _statistic(
            stats[:, index], reference["statistics"][name], reference["count"], level
        )
        report["statistics"][name] = figures
    if validation:
        report[FLAGGED] = flagged_share(np.asarray(flagged, bool), validation, level)
    report["drifted"] = [n for n, f in report["statistics"].items() if f["drifted"]]
    if validation and report[FLAGGED]["drifted"]:
        report["drifted"].append(FLAGGED)
    return report


def warnings(report: dict) -> list[str]:
    """One line per drifted statistic, saying what moved and how far."""
    lines = []
    for name in report["drifted"]:
        if name == FLAGGED:
            f = report[FLAGGED]
            lines.append(
                f"warning: {FLAGGED} has drifted: {f['flagged']} of {f['images']} images flagged "
                f"({f['share']:.1%}); {f['validation_false_alarms']} of "
                f"{f['validation_normals']} validation normals ({f['validation_share']:.1%}); "
                f"p {_p(f['p_value'])}"
            )
            continue
        f = report["statistics"][name]
        low, high = f["training_range"]
        lines.append(
            f"warning: {name} has drifted: median {f['median']:.4g} here, "
            f"{f['training_median']:.4g} in training (1-99%: {low:.4g}-{high:.4g}); "
            f"KS {f['ks']:.2f}, shift {f['shift']:+.2f}, p {_p(min(f['ks_p'], f['shift_p']))}"
        )
    return lines


def _p(p_value: float) -> str:
    return f"{p_value:.1e}" if p_value > 0 else "< 1e-300"  # beyond a double's reach


def write(report: dict, folder: Path) -> Path:
    """``drift.json`` in ``folder``, written beside and moved into place."""
    path = folder / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return path


def metrics(report: dict) -> dict[str, float]:
    """The report as MLflow metrics: counts, shares and each statistic's figures."""
    images = max(report["images"], 1)
    flat = {
        "drift_images": report["images"],
        "drift_drifted": len(report["drifted"]),
        "drift_input_ok_share": 1.0 - report["input_not_ok"] / images,
    }
    if FLAGGED in report:
        flat["drift_flagged_share"] = report[FLAGGED]["share"]
        flat["drift_flagged_share_p"] = report[FLAGGED]["p_value"]
    for name, f in report["statistics"].items():
        flat.update(
            {
                f"drift_{name}_median": f["median"],
                f"drift_{name}_ks": f["ks"],
                f"drift_{name}_shift": f["shift"],
                f"drift_{name}_p": min(f["ks_p"], f["shift_p"]),
            }
        )
    return flat


def check_mlflow_run(run_id: str | None) -> str:
    """``run_id`` once the tracking store answers and holds it; PipelineError otherwise."""
    import mlflow  # noqa: PLC0415

    from pipeline import tracking  # noqa: PLC0415
    from pipeline.core.errors import PipelineError  # noqa: PLC0415

    uri = tracking.tracking_uri()
    tracking.check_store(uri)
    if not run_id:
        raise PipelineError("the model card names no training run (training_run_id)")
    try:
        mlflow.tracking.MlflowClient(uri).get_run(run_id)
    except mlflow.exceptions.MlflowException:
        missing = f"the model's run {run_id} is not in the tracking store {uri}"
        raise PipelineError(missing) from None
    return run_id


def log_to_mlflow(report: dict, run_id: str, folder: Path) -> None:
    """The report's figures as metrics of the model's run (one step per prediction run).

    ``drift.json`` goes beside them as an artifact, under ``predict/<its time>/``.
    """
    import mlflow  # noqa: PLC0415

    from pipeline import tracking  # noqa: PLC0415

    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    step = len(client.get_metric_history(run_id, "drift_images"))
    stamp = int(time.time() * 1000)
    flat = metrics(report)
    client.log_batch(
        run_id, metrics=[mlflow.entities.Metric(k, float(v), stamp, step) for k, v in flat.items()]
    )
    when = report["created"].replace(":", "")
    client.log_artifact(run_id, str(folder / REPORT_FILE), f"predict/{when}")
