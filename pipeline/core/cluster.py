"""Which worker of a tf.distribute cluster this process is, from ``TF_CONFIG``.

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 1}}' ganomaly train ...

Only the chief (worker 0, or a task of type ``chief``) writes checkpoints, the
stage's output and MLflow records; the other workers train along and write to
their own temporary folders. Standard library only: no TensorFlow import.
"""

from __future__ import annotations

import json
import os

from pipeline.core.config import Config
from pipeline.core.errors import ConfigError


def tf_config() -> dict:
    """The parsed ``TF_CONFIG``, ``{}`` when unset; a malformed one is a one-line error."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err.msg}): {raw[:80]!r}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("cluster"), dict):
        raise ConfigError(f"TF_CONFIG has no 'cluster' mapping: {raw[:80]!r}")
    return parsed


def is_distributed(config: Config) -> bool:
    """Whether training runs as one worker of a multi-worker cluster."""
    return config.train.strategy == "multi_worker"


def is_chief(config: Config) -> bool:
    """Whether this process writes the train stage's output (always, outside a cluster).

    Raises:
        ConfigError: ``train.strategy`` is ``multi_worker`` and ``TF_CONFIG`` is
            missing or names no task of its cluster.
    """
    if not is_distributed(config):
        return True
    settings = tf_config()
    if not settings:
        raise ConfigError(
            "train.strategy: 'multi_worker' needs TF_CONFIG (the cluster and this "
            "worker's task) in the environment"
        )
    task = settings.get("task") or {}
    kind, index = task.get("type"), task.get("index")
    members = settings["cluster"].get(kind) if isinstance(kind, str) else None
    if not isinstance(index, int) or not members or not 0 <= index < len(members):
        raise ConfigError(f"TF_CONFIG: task {task!r} is not a member of its cluster")
    if "chief" in settings["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0
