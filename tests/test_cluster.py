"""pipeline.core.cluster: which worker of a TF_CONFIG cluster writes the output."""

import json

import pytest

from pipeline.core import cluster
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError

MULTI = load_config(None, ["train.strategy=multi_worker"])
HOSTS = ["127.0.0.1:2222", "127.0.0.1:2223"]


def _tf_config(monkeypatch, value) -> None:
    monkeypatch.setenv("TF_CONFIG", value if isinstance(value, str) else json.dumps(value))


def test_outside_a_cluster_every_process_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.is_chief(load_config(None))
    _tf_config(monkeypatch, {"cluster": {"worker": HOSTS}, "task": {"type": "worker", "index": 1}})
    assert cluster.is_chief(load_config(None))  # strategy default: TF_CONFIG is not read


@pytest.mark.parametrize(
    "cluster_spec, task, chief",
    [
        ({"worker": HOSTS}, {"type": "worker", "index": 0}, True),
        ({"worker": HOSTS}, {"type": "worker", "index": 1}, False),
        ({"chief": HOSTS[:1], "worker": HOSTS[1:]}, {"type": "chief", "index": 0}, True),
        ({"chief": HOSTS[:1], "worker": HOSTS[1:]}, {"type": "worker", "index": 0}, False),
    ],
)
def test_worker_0_or_the_chief_task_writes(monkeypatch, cluster_spec, task, chief):
    _tf_config(monkeypatch, {"cluster": cluster_spec, "task": task})
    assert cluster.is_chief(MULTI) is chief


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "'multi_worker' needs TF_CONFIG"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ({"task": {"type": "worker", "index": 0}}, "TF_CONFIG has no 'cluster' mapping"),
        ({"cluster": {"worker": HOSTS}, "task": {"type": "worker", "index": 2}}, "not a member"),
        ({"cluster": {"worker": HOSTS}}, "not a member"),
    ],
)
def test_bad_tf_config_is_a_one_line_error(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        _tf_config(monkeypatch, value)
    with pytest.raises(ConfigError, match=message) as raised:
        cluster.is_chief(MULTI)
    assert "\n" not in str(raised.value)
