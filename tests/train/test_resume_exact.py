"""Exact resume of every configuration of resume_job.py: a fit that dies mid-epoch and is
resumed from its checkpoint ends bitwise equal to an uninterrupted one (weights, optimizer,
schedulers, callbacks, RNG states, history and CSV logs); the harness that does it with
SIGKILL in other processes (resume_trials.py) runs a few trials too."""

import sys
from pathlib import Path

import pytest
import torch

import descend.io
from descend.train import Callback
from descend.train.checkpoint import latest_checkpoint, restore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import resume_job  # noqa: E402
import resume_trials  # noqa: E402


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    monkeypatch.setattr(descend.io, "FSYNC", False)


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, logs):
        if trainer.global_step == self.step:
            raise Crash


def _final(config, tmp_path, crash=None):
    """The final state of an uninterrupted run (``crash=None``), or of one that died after
    step ``crash`` (a checkpoint written just before) and was resumed by a fresh trainer."""
    d, logs = tmp_path / "ck", tmp_path / "logs"
    trainer, train, val = resume_job.build_config(config, d, logs, every_n_steps=4)
    epochs = resume_job.epochs_of(config)
    if crash is None:
        trainer.fit(train, val, epochs=epochs)
        return resume_job.final_state(trainer, logs)
    trainer.callbacks.append(CrashAt(crash))
    with pytest.raises(Crash):
        trainer.fit(train, val, epochs=epochs)
    torch.manual_seed(123)  # a new process would start from other RNG states
    resumed, train, val = resume_job.build_config(config, d, logs, every_n_steps=4)
    restore(resumed, latest_checkpoint(d))
    assert resumed.global_step == crash and resumed.batches_done == 2  # mid-epoch 2
    resumed.fit(train, val, epochs=epochs - resumed.epoch)
    return resume_job.final_state(resumed, logs)


CONFIGS = resume_job.FEATURES + ["opt:sgd", "opt:adagrad", "opt:adadelta", "opt:nesterov_lookahead",
                                 "opt:rmsprop@reference"]


@pytest.mark.parametrize("config", CONFIGS)
def test_resumed_mid_epoch_equals_uninterrupted(tmp_path, config):
    ref = _final(config, tmp_path / "ref")
    got = _final(config, tmp_path / "cut", crash=8)
    assert resume_trials.first_difference(ref, got) is None
    assert got["history"]["epochs"]["train_loss"] == ref["history"]["epochs"]["train_loss"]


def test_the_comparison_sees_a_difference():
    a = {"w": torch.zeros(2), "h": [1.0, float("nan")], "s": {"k": 1}}
    assert resume_trials.first_difference(a, {"w": torch.zeros(2), "h": [1.0, float("nan")], "s": {"k": 1}}) is None
    assert "max |difference| 1e-07" in resume_trials.first_difference(a, {**a, "w": torch.tensor([0.0, 1e-7])})
    assert resume_trials.first_difference(a, {**a, "h": [1.0, 2.0]}) == "state.h[1]: nan vs 2.0"
    assert "keys" in resume_trials.first_difference(a, {**a, "s": {}})


@pytest.mark.slow
def test_kill_9_trials_in_other_processes(capsys):
    # the bounded version of `python tests/train/resume_trials.py --trials 20`; fresh
    # processes (--spawn): forking a test worker, which runs threads, is not safe
    assert resume_trials.main(["--trials", "1", "--spawn", "--configs", "loader2", "plateau"]) == 0
    assert "all bitwise equal" in capsys.readouterr().out
