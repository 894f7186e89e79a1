"""tf.distribute for the train stage: the strategy of ``train.strategy`` and a watchdog.

    strategy = distribute.make_strategy(config)     # first, before any TensorFlow op
    with distribute.Watchdog(config) as watchdog:
        ...; watchdog.alive()                          # after every step

``default`` is one process on its default device; ``mirrored`` all the local
GPUs (the CPU when there is none); ``multi_worker`` a ``MultiWorkerMirroredStrategy``
over the cluster in ``TF_CONFIG``. A worker that dies leaves the others waiting
in a collective: the collectives time out after ``train.worker_timeout_s``, and
the watchdog ends a process that made no progress for that long, in one line
(exit 2), rather than letting it hang.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import tensorflow as tf

from pipeline.core import cluster
from pipeline.core.config import Config
from pipeline.core.errors import ClusterError, PipelineError

# What a collective raises when a peer died or cannot be reached.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)


def make_strategy(config: Config) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of ``train.strategy``.

    Raises:
        PipelineError: ``multi_worker`` without a usable ``TF_CONFIG``, or after
            TensorFlow already ran in this process.
    """
    kind = config.train.strategy
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    cluster.is_chief(config)  # TF_CONFIG present and naming this task
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=config.train.worker_timeout_s
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (RuntimeError, ValueError) as err:
        raise PipelineError(
            f"train.strategy: 'multi_worker' could not start ({str(err).splitlines()[0]}); "
            "run `ganomaly train` on its own in each worker's process"
        ) from None


def peer_failure(err: Exception) -> ClusterError:
    """The one-line error of a collective that failed because a worker went away."""
    text = re.sub(r"\{\{.*?\}\}", " ", str(err))  # TensorFlow's node names
    reason = " ".join(text.split())[:200] or type(err).__name__
    return ClusterError(
        f"train: a worker of the cluster stopped or cannot be reached ({reason}); "
        "start every worker again with the same command to resume from the last checkpoint"
    )


class Watchdog:
    """Ends the process (exit 2, one line) when training makes no progress for too long.

    Active only with ``train.strategy: multi_worker``, where a dead peer would
    otherwise leave this worker waiting in a collective for ever.

    Args:
        config: the run's config (``train.strategy``, ``train.worker_timeout_s``).
    """

    def __init__(self, config: Config):
        self.enabled = cluster.is_distributed(config)
        # Tracing the first step can take a while: it gets twice the time.
        self.timeout = config.train.worker_timeout_s
        self._last = time.monotonic() + self.timeout
        self._done = threading.Event()

    def alive(self) -> None:
        """Records progress (a step or a validation pass finished)."""
        self._last = time.monotonic()

    def __enter__(self) -> Watchdog:
        if self.enabled:
            threading.Thread(target=self._watch, daemon=True, name="train-watchdog").start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.timeout / 10)):
            silent = time.monotonic() - self._last
            if silent > self.timeout:
                print(
                    f"ganomaly train: error: no progress from the cluster for {silent:.0f} s "
                    "(train.worker_timeout_s): a worker stopped or cannot be reached; start "
                    "every worker again with the same command to resume from the last checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(2)
