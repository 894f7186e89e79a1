"""Score new images with an exported model: only the SavedModel, no config, no training code.

    ganomaly predict --model artifacts/default/export/ganomaly --input new_parts/ --out out/
    make predict MODEL=artifacts/default/export/ganomaly INPUT=new_parts/

``--model`` is a model folder (its newest version is used) or one version folder.
``--input`` takes folders (searched recursively for PNG, JPEG and BMP files) and files.
Writes into ``--out``:
- ``predictions.csv``: path, score, is_anomaly, regions and their boxes in original
  pixels (``y0 x0 y1 x1`` each, ``;`` between boxes), from the pixel threshold and
  region rules stored in the version's ``assets/ganomaly.json``.
- ``overlays/<name>.png`` for every flagged image: image, heatmap, boxes
  (``--no-overlays``: none).
- ``errors.csv``: inputs that could not be scored and why; they do not stop the run.
Files are scored in batches through the ``serving_bytes`` signature, the way TF Serving
scores them; a batch the model refuses is retried file by file to find the bad ones.
The next batch is read on a thread while the model scores this one, and overlays are
drawn on another (numpy and Pillow, a few milliseconds each), so neither waits for the
model nor holds it up.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PREDICTION_COLUMNS = ["path", "score", "is_anomaly", "regions", "boxes"]


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


def _draw_overlay(card: dict, path: Path, data: bytes, score: float, full, found, folder):
    from components import overlay  # noqa: PLC0415
    from models.decoding import decode_bytes  # noqa: PLC0415

    title = f"{path.name}  score {score:.2f}"
    picture = overlay.draw(decode_bytes(data, 3), full, found, None, card["pixel_threshold"], title)
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
    n_batches = -(-len(files) // batch_size)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as painter:
        batches = _batches(files, batch_size, reader)
        label = f"[predict] {len(files)} images, batch"
        for readable, unreadable in progress(batches, n_batches, label):
            errors += unreadable
            for path, data, size, out in _score_batch(predictor, readable, errors):
                full, found = predictor.regions(out["anomaly_map"], size or _decoded_size(data))
                boxes = ";".join(f"{r.y0} {r.x0} {r.y1} {r.x1}" for r in found)
                score, flagged = float(out["score"]), int(out["is_anomaly"])
                rows.append((str(path), score, flagged, len(found), boxes))
                if flagged and overlays:
                    folder.mkdir(exist_ok=True)
                    args = (predictor.card, path, data, score, full, found, folder)
                    drawn.append(painter.submit(_draw_overlay, *args))
        for future in drawn:
            future.result()  # an overlay that failed to draw fails the run, not silently
    _write_csv(out_dir / "predictions.csv", PREDICTION_COLUMNS, rows)
    _write_csv(out_dir / "errors.csv", ["path", "reason"], errors)
    seconds = time.perf_counter() - started
    return {
        "images": len(rows),
        "flagged": sum(row[2] for row in rows),
        "errors": len(errors),
        "images_per_s": len(rows) / max(seconds, 1e-9),
        "version": predictor.card["version"],
    }


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
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}")
        summary = predict(
            args.model, args.input, args.out, args.batch_size, overlays=not args.no_overlays
        )
    except PredictError as err:
        print(f"ganomaly predict: error: {err}", file=sys.stderr)
        return 2
    errors = f", {summary['errors']} unreadable (errors.csv)" if summary["errors"] else ""
    print(
        f"[predict] {summary['images']} images scored with version {summary['version']}: "
        f"{summary['flagged']} flagged{errors}; {summary['images_per_s']:.1f} images/s "
        f"-> {args.out / 'predictions.csv'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
