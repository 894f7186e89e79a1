"""benchmarks.torch_reference: imports and parses without torch; with it, one tiny real run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import torch_reference

SMALL = {"nz": 8, "ngf": 8, "ndf": 8}
ROOT = Path(__file__).resolve().parents[1]


def test_importing_needs_no_torch_and_the_parser_takes_steps_rounds_threads():
    code = "import sys, benchmarks.torch_reference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    args = torch_reference.parser().parse_args(["--steps", "2", "--rounds", "1", "--threads", "1"])
    assert (args.steps, args.rounds, args.threads) == (2, 1, 1)
    defaults = torch_reference.parser().parse_args([])
    assert (defaults.steps, defaults.rounds, defaults.threads) == (12, 3, 2)


@pytest.fixture
def small(monkeypatch):
    """The original's networks shrunk (nz 8, ngf 8), and 32x32 images for both configs."""
    pytest.importorskip("torch")
    monkeypatch.setattr(torch_reference, "NETWORKS", SMALL)
    monkeypatch.setattr(torch_reference, "CONFIGS", {"32x1": (32, 1), "64x3": (32, 3)})


def test_one_step_updates_both_networks(small):
    import torch

    model = torch_reference.Ganomaly(32, 3, batch=4)
    model.input = torch.rand(4, 3, 32, 32) * 2 - 1
    before_g = [p.detach().clone() for p in model.netg.parameters()]
    before_d = [p.detach().clone() for p in model.netd.parameters()]
    model.optimize_params()
    assert torch.isfinite(model.err_g) and torch.isfinite(model.err_d)
    assert model.fake.shape == model.input.shape and model.latent_i.shape == (4, 8, 1, 1)
    for before, net in ((before_g, model.netg), (before_d, model.netd)):
        assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_main_prints_every_key_as_one_json_line_last(small, capsys):
    assert torch_reference.main(["--steps", "2", "--rounds", "1", "--threads", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "train_img_s_32x1",
        "train_img_s_64x3",
        "infer_img_s_32x1",
        "infer_img_s_64x3",
        "latency_ms_b1_64x3",
    ):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["torch_version"]
