"""python -m benchmarks.model: training and scoring speed of the model (``make bench``).

    python -m benchmarks.model [--steps 12] [--rounds 3] [--threads 2]

Measures, on random inputs with the paper's networks (nz 100, ngf = ndf 64, no
extra layers, batch 64, float32) at 32x32x1 and 64x64x3: training images/s of the
train stage's step (``components.train.step_function``, warm-up excluded),
generator inference images/s, the scorer's batch-1 latency, the training FLOPs per
image counted from the layer shapes, and this CPU's float32 matmul rate (numpy), the
practical limit. Prints one JSON
object, last on its output; each figure is the median of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

BATCH = 64
INFER_CALLS = 4  # inference calls per training step timed (each is about 4x shorter)
WARMUP = 3  # calls before timing: tracing, then oneDNN's first runs of each kernel
CONFIGS = {"32x1": (32, 1), "64x3": (64, 3)}
# The paper's networks (nz 100, ngf = ndf 64), as the PyTorch original runs them.
NETWORKS: dict = {}


def _set_threads(threads: int) -> None:
    import tensorflow as tf  # noqa: PLC0415

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process: keep its threads
        pass


def _model(isize: int, channels: int):
    import keras  # noqa: PLC0415

    from models.fused_adam import FusedAdam  # noqa: PLC0415
    from models.ganomaly import GANomaly  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = GANomaly(isize=isize, channels=channels, options=NETWORKS)
    model.compile(  # the train stage's optimizers
        g_optimizer=FusedAdam(2e-4, beta_1=0.5),
        d_optimizer=FusedAdam(2e-4, beta_1=0.5),
    )
    return model


def _images(n: int, isize: int, channels: int):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (n, isize, isize, channels)).astype("float32")


def median_seconds(fn, calls: int, warmup: int | None = None) -> float:
    """Median seconds of one call of ``fn`` over ``calls`` calls, after ``warmup`` calls.

    ``warmup`` defaults to ``WARMUP``. ``benchmarks.torch_reference`` times the PyTorch
    original with this same function.
    """
    for _ in range(WARMUP if warmup is None else warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_img_s(isize: int, channels: int, steps: int) -> float:
    """Images/s of the train stage's own step: the median step after the warm-up."""
    import tensorflow as tf  # noqa: PLC0415

    from components.train import step_function  # noqa: PLC0415

    model = _model(isize, channels)
    step = step_function(model, tf.distribute.get_strategy())
    batch = tf.constant(_images(BATCH, isize, channels))

    def one_step():
        return {name: float(value) for name, value in step(batch).items()}  # as the stage does

    return BATCH / median_seconds(one_step, steps)


def infer_img_s(isize: int, channels: int, steps: int) -> float:
    """Generator images/s in inference mode, batch 64 (what scoring runs): the median call."""
    import tensorflow as tf  # noqa: PLC0415

    model = _model(isize, channels)
    forward = tf.function(lambda x: model.generator(x, training=False))
    images = tf.constant(_images(BATCH, isize, channels))
    return BATCH / median_seconds(lambda: forward(images)[0].numpy(), steps)


def infer_gflop_per_img(isize: int, channels: int) -> float:
    """Generator forward FLOPs per image (encoder, decoder, encoder), from the layer shapes."""
    return _conv_flops(_model(isize, channels).generator) / 1e9


def latency_ms_b1(isize: int, channels: int, repeats: int = 50) -> float:
    """Median milliseconds of the scorer (residual kind) on one image."""
    import tensorflow as tf  # noqa: PLC0415

    from models.scorer import Scorer  # noqa: PLC0415

    scorer = Scorer(_model(isize, channels))
    score = tf.function(lambda x: scorer.score(x)["score"])
    image = tf.constant(_images(1, isize, channels))
    return 1000 * median_seconds(lambda: score(image).numpy(), repeats)


def _conv_flops(network) -> float:
    """Forward multiply-adds x2 of every Conv2D / Conv2DTranspose, per image."""
    import keras  # noqa: PLC0415

    total = 0.0
    for layer in network._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * c_in * layer.filters * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * layer.input.shape[-1] * c_out * kh * kw
    return total


def train_gflop_per_img(isize: int, channels: int) -> float:
    """Training FLOPs per image, from the layer shapes.

    A step runs the generator forward and backward (3 forward costs: forward,
    input and weight gradients) and the discriminator once on the real and once
    on the fake batch, each forward and backward with both gradients (2 x 3,
    the generator's loss flowing back through the fake pass's input gradients):
    3 G + 6 D. (The PyTorch original runs each discriminator pass twice.)
    """
    model = _model(isize, channels)
    return (3 * _conv_flops(model.generator) + 6 * _conv_flops(model.discriminator)) / 1e9


def cpu_matmul_gflop_s(size: int = 2048, repeats: int = 5) -> float:
    """The float32 matmul rate of this CPU through numpy's BLAS: the practical limit."""
    import numpy as np  # noqa: PLC0415

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = min(timed(lambda: a @ a) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_round(configs: dict, steps: int, train_img_s, infer_img_s, latency_ms_b1) -> dict:
    """One round of the figures this bench and ``benchmarks.torch_reference`` both print.

    Training and inference images/s at each of ``configs`` (name -> (isize,
    channels)) and the batch-1 latency at its ``64x3``, from the bench's own
    measuring functions.
    """
    figures = {}
    for name, (isize, channels) in configs.items():
        figures[f"train_img_s_{name}"] = train_img_s(isize, channels, steps)
        figures[f"infer_img_s_{name}"] = infer_img_s(isize, channels, steps * INFER_CALLS)
    figures["latency_ms_b1_64x3"] = latency_ms_b1(*configs["64x3"])
    return figures


def round_medians(rounds: int, one_round) -> dict:
    """Each figure of ``one_round()`` (a dict), the median over ``rounds`` rounds."""
    figures = [one_round() for _ in range(rounds)]
    return {key: round(statistics.median(f[key] for f in figures), 2) for key in figures[0]}


def measure(steps: int, rounds: int) -> dict:
    """One dict of every figure, each the median over ``rounds``."""

    def one_round() -> dict:
        time.sleep(1.0)  # lets TensorFlow's worker threads go idle before numpy runs
        matmul = cpu_matmul_gflop_s()
        speeds = speed_round(CONFIGS, steps, train_img_s, infer_img_s, latency_ms_b1)
        return {"cpu_matmul_gflop_s": matmul, **speeds}

    result = round_medians(rounds, one_round)
    result["train_gflop_per_img_64x3"] = round(train_gflop_per_img(64, 3), 4)
    result["achieved_gflop_s_64x3"] = round(
        result["train_gflop_per_img_64x3"] * result["train_img_s_64x3"], 2
    )
    result["share_of_matmul_limit_64x3"] = round(
        result["achieved_gflop_s_64x3"] / result["cpu_matmul_gflop_s"], 3
    )
    result["infer_achieved_gflop_s_64x3"] = round(
        infer_gflop_per_img(64, 3) * result["infer_img_s_64x3"], 2
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow and BLAS threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    _set_threads(args.threads)
    result = measure(args.steps, args.rounds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
