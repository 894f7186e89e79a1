"""Export: a SavedModel for TensorFlow Serving, a new version each time, never overwriting.

    ganomaly export --config configs/default.yaml --run default
    saved_model_cli show --dir artifacts/default/export/ganomaly/1 --all

Reads ``artifacts/<run>/train/model.weights.h5`` (the networks),
``artifacts/<run>/evaluate/`` (``score_statistics.npz``, the thresholds and the
validation normals' scores in ``scoring.json``, the test metrics) and
``artifacts/<run>/preprocess/`` (the preprocessing spec in ``preprocess.json``,
the training normals' input statistics in ``input_statistics.json``).

Writes ``artifacts/<run>/export/``:
- ``<model_name>/<version>/``: TF Serving's layout; the signatures are described in
  ``models/serving.py``. Inside it ``assets/ganomaly.json`` (what the model expects and
  decides, where it came from, its test metrics, what normal input looks like:
  ``input_statistics`` and ``validation_scores``) and
  ``assets.extra/tf_serving_warmup_requests``. Every earlier version is kept: a new
  export takes the next free version unless ``export.version`` names one, and an
  existing version is never overwritten.
- ``models.config``: TF Serving's model config listing the model.
- ``scoring.json``: a copy of evaluate's thresholds and score options.

``export.min_image_auroc`` gates the export (TFX's blessing): below it the stage
refuses in one line and the versions already exported stay as they were. The
version is logged into the pipeline's MLflow run and registered in the Model
Registry under ``export.model_name`` (``components/pyfunc_model.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from components.warmup import write_warmup_requests
from models.input_stats import REFERENCE_FILE
from models.serving import ASSET_FILE, SIGNATURES, serving_archive
from pipeline.core import artifacts, modeling, records
from pipeline.core.config import Config
from pipeline.core.errors import PipelineError

MODELS_CONFIG = "models.config"


def check_gate(min_image_auroc: float, metrics: dict) -> None:
    """Refuses an export whose test image AUROC is below the configured minimum."""
    auroc = metrics.get("image_auroc")
    if min_image_auroc > 0 and (auroc is None or auroc < min_image_auroc):
        shown = "not measured" if auroc is None else f"{auroc:.4f}"
        raise PipelineError(
            f"export refused: test image AUROC {shown} is below export.min_image_auroc "
            f"{min_image_auroc:g}; the exported versions are unchanged"
        )


def existing_versions(model_dir: Path) -> list[int]:
    """The integer version folders of a model folder, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def choose_version(model_dir: Path, requested: int) -> int:
    """``requested``, or the next free version when it is 0; never an existing one."""
    versions = existing_versions(model_dir)
    if requested == 0:
        return (versions[-1] + 1) if versions else 1
    if requested in versions:
        raise PipelineError(
            f"{model_dir / str(requested)}: version {requested} exists and is never "
            "overwritten; set export.version=0 for the next free version"
        )
    return requested


def carry_versions(published: Path, out: Path) -> None:
    """Hard-links everything already exported into the new output (copies if it cannot)."""
    if not published.is_dir():
        return
    for entry in published.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def models_config(out: Path) -> str:
    """TF Serving's ``--model_config_file``: every model folder, its newest version served."""
    entries = []
    for model_dir in sorted(p for p in out.iterdir() if existing_versions(p)):
        entries.append(
            "  config {\n"
            f'    name: "{model_dir.name}"\n'
            f'    base_path: "/models/{model_dir.name}"\n'
            '    model_platform: "tensorflow"\n'
            "    model_version_policy { latest { num_versions: 1 } }\n"
            "  }\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def model_card(
    config: Config,
    spec: dict,
    served_map_size: tuple[int, int],
    scoring: dict,
    metrics: dict,
    reference: dict | None,
    labelled_defects: dict | None = None,
    **provenance,
) -> dict:
    """``assets/ganomaly.json``: what the model expects and decides, and its provenance.

    ``served_map_size``: ``(H, W)`` of the anomaly map the signatures return (the
    scorer's ``map_size``); ``reference``: the training normals' input statistics (None for a run
    preprocessed before they existed); ``labelled_defects``: the real defects the
    defect head learned from, ``{type: {"images", "masked"}}`` (train.json);
    ``provenance``: ``version``, ``training_run_id`` and ``git_commit``.
    """
    return {
        "model_name": config.export.model_name,
        **provenance,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "isize": spec["isize"],
        "channels": spec["channels"],
        "map_size": list(served_map_size),
        "head_isize": config.model.head_isize,
        "head_size": list(config.model.head_size),
        "preprocess": spec,
        "score": scoring["score"],
        "threshold": scoring["threshold"],
        "pixel_threshold": scoring["map_threshold"],
        "threshold_method": scoring["threshold_method"],
        "regions": {
            "min_area": config.evaluate.min_region_area,
            "max_area": config.evaluate.max_region_area,
            "min_mean": config.evaluate.min_region_mean,
        },
        "test_metrics": metrics,
        "signatures": list(SIGNATURES),
        "input_statistics": reference,
        "validation_scores": scoring.get("validation_scores"),
        "labelled_defects": labelled_defects,
    }


def input_reference(preprocess_dir: Path) -> dict | None:
    """The training normals' input statistics, or None (preprocessed before they existed)."""
    path = preprocess_dir / REFERENCE_FILE
    if not path.is_file():
        print(f"[export] no {REFERENCE_FILE} in {preprocess_dir}: no input checks", flush=True)
        return None
    return json.loads(path.read_text())


def warmup_inputs(spec: dict) -> dict:
    """One mid-grey image per signature: cheap, and valid for every preprocessing."""
    image = np.full((1, spec["isize"], spec["isize"], spec["channels"]), 128, np.uint8)
    png = tf.io.encode_png(image[0]).numpy()
    return {
        "serving_default": {"images": image.astype(np.float32)},
        "serving_bytes": {"encoded": np.array([png], dtype=object)},
    }


def _check_reload(target: Path, expected_fn, spec: dict) -> None:
    """The reloaded SavedModel must agree with the in-memory one before anything moves."""
    probe = np.random.default_rng(0).uniform(0, 255, (2, 48, 40, spec["channels"]))
    probe = tf.constant(probe.astype(np.float32))
    expected = expected_fn(probe)["score"].numpy()
    reloaded = tf.saved_model.load(str(target)).signatures["serving_default"]
    got = reloaded(images=probe)["score"].numpy()
    if not np.allclose(expected, got, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"reloaded SavedModel disagrees: {expected} vs {got}")


def run(config: Config, inputs: dict[str, Path], out: Path) -> None:
    """Adds a version of the trained, calibrated scorer to the run's exported models."""
    import mlflow  # noqa: PLC0415

    from components import pyfunc_model  # noqa: PLC0415

    metrics = json.loads((inputs["evaluate"] / "metrics.json").read_text())
    check_gate(config.export.min_image_auroc, metrics)
    published = out.parent / "export"  # what earlier exports left; replaced on success
    name = config.export.model_name
    version = choose_version(published / name, config.export.version)
    carry_versions(published, out)

    spec = records.read_info(inputs["preprocess"])["spec"]
    scoring = json.loads((inputs["evaluate"] / "scoring.json").read_text())
    scorer = modeling.load_scorer(config, inputs["train"], inputs["evaluate"])
    reference = input_reference(inputs["preprocess"])
    archive, endpoints = serving_archive(scorer, spec, scoring["threshold"], reference)
    target = out / name / str(version)
    archive.write_out(str(target), verbose=False)
    _check_reload(target, endpoints["serving_default"], spec)

    run_id = mlflow.active_run().info.run_id
    commit = mlflow.get_run(run_id).data.tags.get("git_commit")  # recorded by the first stage
    card = model_card(
        config,
        spec,
        scorer.map_size,  # what the serving signatures return
        scoring,
        metrics,
        reference,
        json.loads((inputs["train"] / "train.json").read_text()).get("labelled_defects", {}),
        version=version,
        training_run_id=run_id,
        git_commit=commit,
    )
    (target / "assets").mkdir(exist_ok=True)
    (target / "assets" / ASSET_FILE).write_text(json.dumps(card, indent=2))
    write_warmup_requests(target, name, warmup_inputs(spec))
    (out / MODELS_CONFIG).write_text(models_config(out))
    shutil.copy(inputs["evaluate"] / "scoring.json", out / "scoring.json")

    # Registered only once the folder is complete: the Registry never names a
    # version that did not land.
    artifacts.check_outputs("export", out)
    size_mb = saved_size_mb(target)
    mlflow.log_metrics({"export_size_mb": size_mb, "export_version": version})
    # The run's record of each version: small files (the SavedModel itself is the
    # registered model's artifact, logged once).
    mlflow.log_artifact(str(target / "assets" / ASSET_FILE), f"export/{name}/{version}")
    mlflow.log_artifact(str(out / MODELS_CONFIG), "export")
    registered = pyfunc_model.log_and_register(target, card)
    print(
        f"[export] SavedModel {name}/{version} ({size_mb:.1f} MB); "
        f"registered as models:/{name}/{registered}",
        flush=True,
    )


def saved_size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
