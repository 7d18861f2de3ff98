"""A small training job for the resume tests: ``python resume_job.py DIR OUT [--resume]``.

Everything that could break an exact resume is in it: dropout (torch RNG), a numpy and a
python random draw per batch (their RNGs), Adam state, a per-step and a per-epoch
scheduler, an early-stopping-style monitor, a mid-epoch position and a last batch
smaller than the others. ``DESCEND_TEST_STEP_SLEEP`` slows each step so that a kill
lands at a random step.
"""

from __future__ import annotations

import os
import random
import sys
import time

import numpy as np
import torch

from descend.train import Callback, MonitorCallback, Trainer
from descend.train.checkpoint import CheckpointCallback, latest_checkpoint, restore

EPOCHS = 4


class Noise(Callback):
    """Adds numpy and python random noise to the inputs (exercises their RNG states)."""

    def on_batch_begin(self, trainer, batch):
        x, y = batch
        scale = 0.01 * np.random.rand() + 0.01 * random.random()
        return x + scale, y


class Watch(MonitorCallback):
    """A monitor whose counters must survive the resume."""

    def on_epoch_end(self, trainer, logs):
        self.update(self.value_from(logs), trainer.epoch)


class Slow(Callback):
    def __init__(self, seconds):
        self.seconds = seconds

    def on_batch_end(self, trainer, logs):
        time.sleep(self.seconds)


def build(directory, sleep=0.0):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    per_step = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + 0.01 * t))
    per_epoch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    per_epoch.unit = "epoch"
    callbacks = [Noise(), Watch(monitor="val_loss"),
                 CheckpointCallback(directory, every_n_steps=1, keep_last=2, monitor="val_loss"),
                 Slow(sleep)]
    trainer = Trainer(model, opt, schedulers=[per_step, per_epoch], callbacks=callbacks,
                      batch_size=16, seed=3, progress=False)
    return trainer, (x, y), (x[:30], y[:30])


def run(directory, resume=False, sleep=0.0):
    trainer, train, val = build(directory, sleep)
    if resume:
        path = latest_checkpoint(directory)
        if path is not None:
            restore(trainer, path)
    trainer.fit(train, val, epochs=EPOCHS - trainer.epoch)
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    directory, out = sys.argv[1], sys.argv[2]
    sleep = float(os.environ.get("DESCEND_TEST_STEP_SLEEP", "0"))
    t = run(directory, resume="--resume" in sys.argv, sleep=sleep)
    torch.save({k: v.clone() for k, v in t.model.state_dict().items()}, out)
