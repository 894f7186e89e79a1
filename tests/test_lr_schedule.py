"""train.lr_schedule: the cosine schedule's rates, and a crashed run that resumes on them.

Real training on the tiny data (its own test file, so that ``--dist loadfile``
runs it beside the crash-and-resume tests rather than after them).
"""

from __future__ import annotations

import numpy as np
import pytest

from components import train
from tests.conftest import train_run
from tests.test_train_resume import _config, _same_weights, _train_in_process


def _crash_at_step(monkeypatch, crash_step: int) -> None:
    """The next trainings raise after ``crash_step`` steps (global), as a crashed process stops."""
    check = train.Trainer._check_finite

    def crashing(self, values):
        if self.state["global_step"] == crash_step:
            self.saves.wait()  # the checkpoints written so far are on disk, as after a kill
            raise RuntimeError("crash")
        check(self, values)

    monkeypatch.setattr(train.Trainer, "_check_finite", crashing)


@pytest.mark.slow  # two trainings and a resume, over 20 s
def test_cosine_schedule_decays_the_rates_and_a_resumed_run_follows_it_bit_for_bit(
    tiny_preprocessed, monkeypatch, capsys
):
    config_file, root = tiny_preprocessed
    config = _config(
        config_file, "train.epochs=2", "train.lr_schedule=cosine", "train.checkpoint_every_steps=1"
    )
    rates, set_rate, check = [], train.Trainer._set_learning_rate, train.Trainer._check_finite

    def recording(self):
        set_rate(self)
        rates.append(float(self.model.g_optimizer.learning_rate))

    monkeypatch.setattr(train.Trainer, "_set_learning_rate", recording)
    reference = _train_in_process(config, train_run(root, "cosine"))
    total, lr = len(rates), config.train.lr
    expected = [lr * train.schedule_factor("cosine", step, total) for step in range(total)]
    assert total >= 4 and np.allclose(rates, expected, rtol=1e-6)
    assert rates[0] == pytest.approx(lr) and rates[-1] < 0.1 * lr

    # Crash mid-epoch 2; the same command resumes at that step's rate, not the first.
    run_path, steps_per_epoch = train_run(root, "cosine-crashed"), total // 2
    _crash_at_step(monkeypatch, steps_per_epoch + 1)
    with pytest.raises(RuntimeError, match="crash"):
        _train_in_process(config, run_path)
    monkeypatch.setattr(train.Trainer, "_check_finite", check)
    capsys.readouterr()
    resumed = _train_in_process(config, run_path)
    assert "resuming from" in (printed := capsys.readouterr().out)
    assert "(epoch 2, step 1 done)" in printed, printed
    assert (resumed / "history.csv").read_text() == (reference / "history.csv").read_text()
    assert _same_weights(resumed / "model.weights.h5", reference / "model.weights.h5")
