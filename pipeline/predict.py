"""Score new images with an exported model: only the SavedModel, no config, no training code.

    ganomaly predict --model artifacts/default/export/ganomaly --input new_parts/ --out out/
    make predict MODEL=artifacts/default/export/ganomaly INPUT=new_parts/

``--model`` is a model folder (its newest version is used) or one version folder.
``--input`` takes folders (searched recursively for PNG, JPEG and BMP files) and files.
Writes into ``--out``:
- ``predictions.csv``: path, score, is_anomaly, input_ok (1: the frame is within the
  training normals' acquisition range, 0: it is not), regions and their boxes in
  original pixels (``y0 x0 y1 x1`` each, ``;`` between boxes), from the pixel threshold
  and region rules stored in the version's ``assets/ganomaly.json``, and the input
  statistic furthest from the training normals with its z-score.
- ``drift.json``: the run's images against the training normals' input statistics and
  its share of flagged images against the validation normals' (``pipeline/drift.py``);
  one warning line per drifted statistic. ``--mlflow`` also logs the figures to the
  model's pipeline run. A model exported without input statistics has no checks: one
  line says so, and ``input_ok`` is left empty.
- ``overlays/<name>.png`` for every flagged image: image, heatmap, boxes
  (``--no-overlays``: none).
- ``errors.csv``: inputs that could not be scored and why; they do not stop the run.
Files are scored in batches through the ``serving_bytes`` signature, the way TF Serving
scores them; a batch the model refuses is retried file by file to find the bad ones.
The next batch is read on a thread while the model scores this one, and overlays are
drawn on two others (numpy and Pillow, about 6 ms each), so neither waits for the
model nor holds it up.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PREDICTION_COLUMNS = [
    "path",
    "score",
    "is_anomaly",
    "input_ok",
    "regions",
    "boxes",
    "input_statistic",
    "input_z",
]


class PredictError(Exception):
    """A problem with the command's arguments: one line for the user."""


def version_folder(model: Path) -> Path:
    """``model`` itself when it is a SavedModel, else its highest integer version."""
    if (model / "saved_model.pb").is_file():
        return model
    versions = (
        sorted(
            (
                int(p.name)
                for p in model.glob("*")
                if p.name.isdigit() and (p / "saved_model.pb").is_file()
            ),
        )
        if model.is_dir()
        else []
    )
    if not versions:
        raise PredictError(f"{model}: neither a SavedModel nor a folder of numbered versions")
    return model / str(versions[-1])


def input_files(inputs: list[str]) -> list[Path]:
    """The image files named or found (recursively) under the inputs, in order."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += [p for p in found if p.is_file()]
        elif item.exists() or item.is_symlink():
            files.append(item)
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not files:
        raise PredictError(f"no PNG, JPEG or BMP files in {' '.join(inputs)}")
    return files


class Predictor:
    """The SavedModel's ``serving_bytes`` plus the regions of ``assets/ganomaly.json``."""

    def __init__(self, version_dir: Path):
        import tensorflow as tf  # noqa: PLC0415 - after argument errors, not before

        from models.serving import ASSET_FILE  # noqa: PLC0415

        self.tf = tf
        self.card = json.loads((version_dir / "assets" / ASSET_FILE).read_text())
        self.serve = tf.saved_model.load(str(version_dir)).signatures["serving_bytes"]
        # Exported before the input checks: no input statistics, no input_ok output.
        self.checks = bool(self.card.get("input_statistics"))
        if self.checks:  # scipy loads with the model, not in the middle of the run
            from pipeline import drift  # noqa: F401, PLC0415

    @contextlib.contextmanager
    def graph_rewrites_off(self):
        """Grappler off while this run first calls the model, as it was after.

        Rewriting the loaded graph (the first request's "optimisation") took 0.66 s of
        the 1.1 s a 400-image folder spends in the model, and bought nothing per batch on
        this CPU: 0.08 s a batch of 64 either way, scores equal to float rounding
        (6e-8 apart at most; README: Speed). The setting is the process's; it is put
        back for anything the caller runs next, and the functions first called here keep
        the graph unrewritten.
        """
        optimizer = self.tf.config.optimizer
        before = optimizer.get_experimental_options().get("disable_meta_optimizer", False)
        optimizer.set_experimental_options({"disable_meta_optimizer": True})
        try:
            yield
        finally:
            optimizer.set_experimental_options({"disable_meta_optimizer": before})

    def score(self, files: list[bytes]) -> dict:
        out = self.serve(encoded=self.tf.constant(files, dtype=self.tf.string))
        return {key: value.numpy() for key, value in out.items()}

    def regions(self, amap, size: tuple[int, int]):
        """Regions of one ``[isize, isize]`` map, in the original ``(H, W)`` pixels."""
        from components.localize import full_size, region_rules  # noqa: PLC0415
        from models.regions import find_regions  # noqa: PLC0415

        rules = region_rules(**self.card["regions"])
        full = full_size(amap, size, self.card["preprocess"]["resize"])
        found = find_regions(full, self.card["pixel_threshold"], **rules)
        return full, found


def _score_batch(predictor: Predictor, batch: list[tuple], errors: list) -> list:
    """``(path, bytes, (H, W), outputs of one image)`` for each file the model scores."""
    from models.decoding import error_sentence  # noqa: PLC0415

    if not batch:
        return []
    try:
        out = predictor.score([data for _, data, _ in batch])
        return [(*item, {k: v[i] for k, v in out.items()}) for i, item in enumerate(batch)]
    except predictor.tf.errors.InvalidArgumentError as err:
        if len(batch) == 1:
            errors.append((str(batch[0][0]), error_sentence(err)))
            return []
    # A refused batch: score file by file, so only the bad ones are set aside.
    return [row for item in batch for row in _score_batch(predictor, [item], errors)]


def _read(paths: list[Path]) -> tuple[list[tuple[Path, bytes, tuple]], list]:
    """``(path, bytes, (H, W))`` of each readable file, and ``(path, reason)`` of the rest."""
    from components.localize import image_size  # noqa: PLC0415

    readable, errors = [], []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as err:
            errors.append((str(path), f"cannot read ({err.strerror or err})"))
            continue
        try:
            size = image_size(path)
        except Exception:  # noqa: BLE001 - not an image: the model names the problem
            size = None
        readable.append((path, data, size))
    return readable, errors


def _decoded_size(data: bytes) -> tuple[int, int]:
    """``(H, W)`` through the model's own decoder, for a header Pillow could not read."""
    from models.decoding import decode_bytes  # noqa: PLC0415

    return tuple(decode_bytes(data, 1).shape[:2])


def _overlay_pixels(data: bytes) -> np.ndarray:
    """The picture under an overlay: Pillow for plain 8-bit grey and RGB files.

    The model's own decoder (``decode_bytes``) traces a graph on its first call, 1.4 s of
    CPU on the painter threads, where Pillow reads a 128-px PNG in 0.2 ms. Both give these
    files the same orientation (EXIF for JPEG only, as the model); anything else (16-bit,
    alpha, palette, CMYK) goes through the model's decoder, so it looks as the model saw it.
    """
    from PIL import Image, ImageOps  # noqa: PLC0415

    from models.decoding import decode_bytes  # noqa: PLC0415

    with contextlib.suppress(OSError, SyntaxError, ValueError), Image.open(io.BytesIO(data)) as img:
        if img.format in ("PNG", "BMP") and img.mode in ("L", "RGB"):
            return np.asarray(img)
        if img.format == "JPEG" and img.mode in ("L", "RGB"):
            return np.asarray(ImageOps.exif_transpose(img))
    return decode_bytes(data, 3)


def _draw_overlay(card: dict, path: Path, data: bytes, score: float, full, found, folder):
    from components import overlay  # noqa: PLC0415

    title = f"{path.name}  score {score:.2f}"
    picture = overlay.draw(_overlay_pixels(data), full, found, None, card["pixel_threshold"], title)
    picture.save(folder / f"{path.stem}.png", compress_level=1)


def _batches(files: list[Path], batch_size: int, reader: ThreadPoolExecutor):
    """Each batch's ``_read`` result; the next batch is read while this one is scored."""
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    pending = reader.submit(_read, batches[0]) if batches else None
    for i in range(len(batches)):
        current = pending.result()
        if i + 1 < len(batches):
            pending = reader.submit(_read, batches[i + 1])
        yield current


def predict(
    model: Path, inputs: list[str], out_dir: Path, batch_size: int = 64, overlays: bool = True
) -> dict:
    """Scores every input file; writes predictions, overlays and errors; returns a summary."""
    files, version_dir = input_files(inputs), version_folder(model)
    # TensorFlow only once the arguments are known to be good: errors come in a blink.
    from pipeline.core.progress import progress  # noqa: PLC0415

    predictor = Predictor(version_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / "overlays"
    rows, errors, drawn, started = [], [], [], time.perf_counter()
    inputs_seen: list = []  # each scored image's input statistics, for the drift check
    n_batches = -(-len(files) // batch_size)
    with (
        predictor.graph_rewrites_off(),
        ThreadPoolExecutor(1) as reader,
        ThreadPoolExecutor(2) as painter,
    ):
        batches = _batches(files, batch_size, reader)
        label = f"[predict] {len(files)} images, batch"
        for readable, unreadable in progress(batches, n_batches, label):
            errors += unreadable
            for path, data, size, out in _score_batch(predictor, readable, errors):
                full, found = predictor.regions(out["anomaly_map"], size or _decoded_size(data))
                boxes = ";".join(f"{r.y0} {r.x0} {r.y1} {r.x1}" for r in found)
                score, flagged = float(out["score"]), int(out["is_anomaly"])
                ok, statistic, z = _input_check(out, inputs_seen) if predictor.checks else 3 * ("",)
                rows.append((str(path), score, flagged, ok, len(found), boxes, statistic, z))
                if flagged and overlays:
                    folder.mkdir(exist_ok=True)
                    args = (predictor.card, path, data, score, full, found, folder)
                    drawn.append(painter.submit(_draw_overlay, *args))
        for future in drawn:
            future.result()  # an overlay that failed to draw fails the run, not silently
    _write_csv(out_dir / "predictions.csv", PREDICTION_COLUMNS, rows)
    _write_csv(out_dir / "errors.csv", ["path", "reason"], errors)
    report = _drift(predictor, rows, inputs_seen, out_dir)
    seconds = time.perf_counter() - started
    return {
        "images": len(rows),
        "flagged": sum(row[2] for row in rows),
        "not_ok": sum(row[3] == 0 for row in rows),
        "errors": len(errors),
        "images_per_s": len(rows) / max(seconds, 1e-9),
        "version": predictor.card["version"],
        "drift": report,
        "card": predictor.card,
    }


def _input_check(out: dict, seen: list) -> tuple:
    """``(input_ok, input_statistic, input_z)`` of one image; its statistics go to ``seen``."""
    seen.append(out["input_statistics"])
    return int(out["input_ok"]), out["input_statistic"].decode(), round(float(out["input_z"]), 2)


def _drift(predictor: Predictor, rows: list, seen: list, out_dir: Path) -> dict:
    """The run's drift report, written to ``drift.json`` (``drifted`` None: no checks)."""
    from pipeline import drift  # noqa: PLC0415

    if not predictor.checks:
        report = {"drifted": None, "checks": "off", "model_version": predictor.card["version"]}
        report["images"] = len(rows)
    else:
        flagged = np.array([row[2] for row in rows], bool)
        input_ok = np.array([row[3] for row in rows], bool)
        report = drift.compare(np.array(seen), flagged, input_ok, predictor.card)
    drift.write(report, out_dir)
    return report


def _write_csv(path: Path, columns: list[str], rows: list) -> None:
    """Written beside, then moved into place: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganomaly predict", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model or version folder")
    parser.add_argument("--input", required=True, nargs="+", help="image files and folders")
    parser.add_argument("--out", required=True, type=Path, help="where predictions go")
    parser.add_argument("--batch-size", type=int, default=64, help="files per request")
    parser.add_argument(
        "--no-overlays", action="store_true", help="no overlay images (throughput only)"
    )
    parser.add_argument(
        "--mlflow", action="store_true", help="log the drift figures to the model's MLflow run"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}")
        run_id = _mlflow_run(version_folder(args.model)) if args.mlflow else None
        summary = predict(
            args.model, args.input, args.out, args.batch_size, overlays=not args.no_overlays
        )
        _report(summary, args.out)
        if run_id and summary["drift"]["drifted"] is not None:
            from pipeline import drift  # noqa: PLC0415

            drift.log_to_mlflow(summary["drift"], run_id, args.out)
            print(f"[predict] drift figures logged to MLflow run {run_id}", flush=True)
    except PredictError as err:
        print(f"ganomaly predict: error: {err}", file=sys.stderr)
        return 2
    return 0


def _mlflow_run(version_dir: Path) -> str:
    """The pipeline run that exported the model, checked in the tracking store before scoring."""
    from models.serving import ASSET_FILE  # noqa: PLC0415
    from pipeline import drift  # noqa: PLC0415
    from pipeline.core.errors import PipelineError  # noqa: PLC0415

    card = json.loads((version_dir / "assets" / ASSET_FILE).read_text())
    try:
        return drift.check_mlflow_run(card.get("training_run_id"))
    except PipelineError as err:
        raise PredictError(f"--mlflow: {err}") from None


def _report(summary: dict, out: Path) -> None:
    """The summary line, then the input checks: one line each drifted statistic, or why none."""
    from pipeline import drift  # noqa: PLC0415

    report = summary["drift"]
    errors = f", {summary['errors']} unreadable (errors.csv)" if summary["errors"] else ""
    not_ok = f", {summary['not_ok']} not ok (input_ok 0)" if summary["not_ok"] else ""
    print(
        f"[predict] {summary['images']} images scored with version {summary['version']}: "
        f"{summary['flagged']} flagged{not_ok}{errors}; {summary['images_per_s']:.1f} images/s "
        f"-> {out / 'predictions.csv'}",
        flush=True,
    )
    if report["drifted"] is None:
        print(
            f"[predict] drift checks are off for version {summary['version']}: its model card "
            "has no input statistics (exported before them; export it again to have them)",
            flush=True,
        )
        return
    for line in drift.warnings(report):
        print(f"ganomaly predict: {line}", file=sys.stderr, flush=True)
    if not report["drifted"]:
        print(f"[predict] drift: none in {report['tests']} tests -> {out / drift.REPORT_FILE}")


if __name__ == "__main__":
    sys.exit(main())
