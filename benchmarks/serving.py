"""python -m benchmarks.serving: the exported SavedModel's speed (``make bench``).

    python -m benchmarks.serving [--config configs/default.yaml] [--repeats 50]

Exports the config's scorer (untrained weights: the same graph and the same work as a
trained one) through the export stage's own archive, reloads it as TF Serving would, and
measures on this CPU: batch-1 latency (p50 and p95, ms) through each signature, images/s
at batch 64 through each, ``ganomaly predict`` images/s on a folder of 400 PNGs (nothing
flagged: ``predict_img_s``; every image flagged, with and without overlays:
``predict_img_s_flagged``, ``predict_img_s_flagged_no_overlays``; from the first request,
after the model is loaded), and the SavedModel's size (MB). Images are the size of the
config's built-in data (``data.synthetic_size``). The model has the input checks, as the
export stage writes it (a reference from the bench's own frames); the same figures
without them end in ``_no_checks`` (what the checks cost: latency, images/s, predict).
Prints one JSON object, last on its output.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.model import timed

BATCH = 64
PREDICT_IMAGES = 400


def _export(config, folder: Path, threshold: float = 1e9, checks: bool = True) -> Path:
    """The config's scorer as the export stage writes it (with a stand-in model card).

    The default threshold flags nothing; ``-1e9`` flags every image (and every pixel).
    ``checks``: with the input checks, their reference measured on the bench's frames.
    """
    import dataclasses  # noqa: PLC0415

    from models.serving import serving_archive  # noqa: PLC0415
    from pipeline.core import modeling  # noqa: PLC0415

    scorer = modeling.build_scorer(config, modeling.build_model(config))
    spec = dataclasses.asdict(config.preprocess)
    reference = _reference(config, spec) if checks else None
    archive, _ = serving_archive(scorer, spec, threshold, reference)
    target = folder / "1"
    archive.write_out(str(target), verbose=False)
    card = {
        "version": 1,
        "preprocess": spec,
        "pixel_threshold": threshold,
        "regions": {"min_area": 16, "max_area": 0, "min_mean": 0.0},
        "input_statistics": reference,
        "validation_scores": {"count": 100, "false_alarms": 1} if checks else None,
    }
    (target / "assets" / "ganomaly.json").write_text(json.dumps(card))
    return target


def _reference(config, spec: dict) -> dict:
    """Input statistics of the bench's own frames: the checks run and every frame passes."""
    import tensorflow as tf  # noqa: PLC0415

    from models import input_stats  # noqa: PLC0415

    frames = [tf.io.decode_png(data, spec["channels"]) for data in _png_files(config, 16)]
    stats = input_stats.measure(tf.cast(tf.stack(frames), tf.float32), spec)[2].numpy()
    return input_stats.summarise(stats, input_stats.statistic_names(spec))


def _png_files(config, n: int) -> list[bytes]:
    from PIL import Image  # noqa: PLC0415

    side, channels = config.data.synthetic_size, config.preprocess.channels
    rng = np.random.default_rng(0)
    files = []
    for _ in range(n):
        pixels = rng.integers(0, 256, (side, side, channels), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files


def _latencies_ms(call, repeats: int) -> tuple[float, float]:
    call()  # warm-up: tracing and first allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _images_per_s(call, n: int, repeats: int = 3) -> float:
    call()
    best = min(timed(call) for _ in range(repeats))
    return n / best


def measure(config, repeats: int) -> dict:
    """Every figure of the serving benchmark for ``config``."""
    import tensorflow as tf  # noqa: PLC0415

    from components.export import saved_size_mb  # noqa: PLC0415

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = _png_files(config, BATCH)
        pixels = tf.constant(
            np.stack([np.asarray(tf.io.decode_png(f)) for f in files]).astype(np.float32)
        )
        for checks, suffix in ((True, ""), (False, "_no_checks")):
            target = _export(config, Path(tmp) / f"model{suffix}", checks=checks)
            if checks:
                result["export_size_mb"] = saved_size_mb(target)
            signatures = tf.saved_model.load(str(target)).signatures
            result.update(_signature_speeds(signatures, files, pixels, repeats, suffix))
        quiet_models = (Path(tmp) / "model", Path(tmp) / "model_no_checks")
        result.update(_predict_rates(config, Path(tmp), *quiet_models))
    return result


def _signature_speeds(signatures, files: list, pixels, repeats: int, suffix: str) -> dict:
    """Batch-1 latency (p50, p95) and batch-``BATCH`` images/s of each signature."""
    import tensorflow as tf  # noqa: PLC0415

    calls = {
        "serving_default": lambda n: signatures["serving_default"](images=pixels[:n]),
        "serving_bytes": lambda n: signatures["serving_bytes"](encoded=tf.constant(files[:n])),
    }
    result = {}
    for name, call in calls.items():
        p50, p95 = _latencies_ms(lambda call=call: call(1), repeats)
        result[f"latency_ms_b1_p50_{name}{suffix}"] = p50
        result[f"latency_ms_b1_p95_{name}{suffix}"] = p95
        rate = _images_per_s(lambda call=call: call(BATCH), BATCH)
        result[f"img_s_b{BATCH}_{name}{suffix}"] = rate
    return result


def _predict_rates(config, tmp: Path, quiet_model: Path, unchecked_model: Path) -> dict:
    """``ganomaly predict`` images/s on a folder: nothing flagged, every image flagged."""
    from pipeline import predict  # noqa: PLC0415

    inbox = tmp / "inbox"
    inbox.mkdir()
    for i, data in enumerate(_png_files(config, PREDICT_IMAGES)):
        (inbox / f"{i:04d}.png").write_bytes(data)
    flagging_model = _export(config, tmp / "flagging", threshold=-1e9).parent
    runs = {
        "predict_img_s": (quiet_model, True),
        "predict_img_s_no_checks": (unchecked_model, True),
        "predict_img_s_flagged": (flagging_model, True),
        "predict_img_s_flagged_no_overlays": (flagging_model, False),
    }
    rates = {}
    for key, (model, overlays) in runs.items():
        out = tmp / key
        summary = predict.predict(model, [str(inbox)], out, overlays=overlays)
        flagging = model == flagging_model
        assert summary["flagged"] == (PREDICT_IMAGES if flagging else 0), summary
        rates[key] = summary["images_per_s"]
    return rates


def main(argv: list[str] | None = None) -> int:
    from pipeline.core.config import load_config  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 requests per signature")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    print(json.dumps(measure(config, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
