"""A small training job for the resume tests: ``python resume_job.py DIR OUT [--resume] [--config NAME [--every N] [--from STEP]]``.

Everything that could break an exact resume is in it: dropout (torch RNG), a numpy and a
python random draw per batch (their RNGs), Adam state, a per-step and a per-epoch
scheduler, an early-stopping-style monitor, a mid-epoch position and a last batch
smaller than the others. ``DESCEND_TEST_STEP_SLEEP`` slows each step so that a kill
lands at a random step.

``--config NAME`` (see :data:`CONFIGS`) adds one more thing with randomness or state:
any registry optimizer (``opt:<name>``, ``opt:<name>@<backend>``) under a descend
``Scheduler``, a torch ``DataLoader`` with 0 or 2 workers, augmentations, input / weight /
label noise, ``DisturbLabelLoss``, the loss-proportional sampler with ``loss_feedback``,
``EarlyStopping``, a descend plateau schedule and torch's ``ReduceLROnPlateau``. OUT then
receives :func:`final_state` (weights, optimizer, schedulers, callbacks, RNG states,
history and the CSV logs) rather than the weights alone; ``resume_trials.py`` kills
such jobs at random steps and compares the resumed states with an uninterrupted run.
"""

from __future__ import annotations

import copy
import csv
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from descend.train import Callback, CSVLogger, MonitorCallback, Trainer
from descend.train.checkpoint import CheckpointCallback, latest_checkpoint, restore, rng_state

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


class StepSavesFrom(Callback):
    """Turns a checkpoint callback's step saves on from ``step`` on (stateless, so a resumed
    run may lack it): a killed run then pays for step checkpoints only near its kill."""

    def __init__(self, checkpoint, every_n_steps, step):
        self.checkpoint, self.every, self.step = checkpoint, every_n_steps, step

    def on_batch_end(self, trainer, logs):
        if trainer.global_step + 1 >= self.step:
            self.checkpoint.every_n_steps = self.every


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


# ----------------------------------------------------------------------------- configurations

#: Learning rates that train the tiny model without diverging, per registry optimizer.
LRS = {"sgd": 0.1, "momentum": 0.05, "momentum_textbook": 0.05, "nesterov": 0.05,
       "nesterov_lookahead": 0.05, "adagrad": 0.05, "adadelta": 1.0, "rmsprop": 0.005,
       "rmsprop_nesterov": 0.005, "adam": 0.01, "adamw": 0.01,
       # the second-order, large-batch and flat-minimum methods (their registry defaults
       # where the learning rate is a step length along a searched or Newton direction)
       "newton": 0.5, "newton_saddle_free": 0.5, "cg": 1.0, "bfgs": 1.0, "lbfgs": 1.0,
       "hessian_free": 1.0, "kfac": 0.01, "shampoo": 0.01, "lars": 1.0, "lamb": 0.01, "sam": 0.01}

FEATURES = ["loader0", "loader2", "augment", "input_noise", "weight_noise", "label_noise",
            "disturb_label", "loss_proportional", "early_stopping", "plateau", "torch_plateau"]


def configs() -> list[str]:
    """Every configuration name: ``opt:<name>`` for each registry optimizer,
    ``opt:rmsprop@reference``, and the :data:`FEATURES`."""
    from descend.optim import OPTIMIZERS
    return [f"opt:{n}" for n in OPTIMIZERS.names()] + ["opt:rmsprop@reference"] + FEATURES


def epochs_of(config: str) -> int:
    """3 epochs of 6 steps (the last batch smaller); 5 with early stopping (it stops after 4)."""
    return 5 if config == "early_stopping" else 3


def build_config(config: str, directory, out_dir, sleep=0.0, every_n_steps=1):
    """``(trainer, train_data, val_data)`` of one configuration; logs go to ``out_dir``."""
    from descend import optim, schedules
    from descend.data.augment import Augment
    from descend.data.samplers import LossFeedback, LossProportionalSampler, SampledBatches
    from descend.losses import DisturbLabelLoss
    from descend.regularize import InputNoise, LabelNoise, WeightNoise
    from descend.train import EarlyStopping

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 3, 2, 2, generator=g)
    y = (x[:, 0, 0, 0] + x[:, 1, 0, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
    name, backend = "adam", None
    if config.startswith("opt:"):
        name, _, backend = config[4:].partition("@")
    kwargs = {"lr": LRS[name], **({"backend": backend} if backend else {})}
    opt = optim.create(name, model.parameters(), **kwargs)
    callbacks: list = [Noise(), Watch(monitor="val_loss")]
    schedulers: list = []
    loss_fn = torch.nn.functional.cross_entropy
    train_data = (x, y)
    if config == "plateau":  # as a recipe builds it: a callback and a per-step Scheduler
        p = schedules.plateau(LRS[name], factor=0.5, patience=0, min_delta=0.15)
        callbacks.append(p)
        schedulers.append(schedules.Scheduler(opt, {"lr": p}))
    elif config == "torch_plateau":
        s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.3)
        s.unit = "epoch"
        schedulers.append(s)
    else:
        lr = schedules.warmup(schedules.cosine(1.0, total=30), steps=4, start=0.1)
        schedulers.append(schedules.Scheduler(opt, {"lr": lr}, scale="relative"))
    if config in ("loader0", "loader2"):
        train_data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True,
            num_workers=int(config[-1]))
    elif config == "augment":
        callbacks.append(Augment(["hflip", "vflip", {"name": "gaussian_noise", "sigma": 0.05},
                                  "fancy_pca"], seed=5))
    elif config == "input_noise":
        callbacks.append(InputNoise(sigma=0.1, seed=5))
    elif config == "weight_noise":
        callbacks.append(WeightNoise(sigma=0.05, seed=5))
    elif config == "label_noise":
        callbacks.append(LabelNoise(num_classes=2, alpha=0.2, seed=5))
    elif config == "disturb_label":
        loss_fn = DisturbLabelLoss(alpha=0.2, seed=5)
    elif config == "loss_proportional":
        ds = torch.utils.data.TensorDataset(x, y)
        train_data = SampledBatches(ds, LossProportionalSampler(len(ds), mix=0.2, seed=5), 16)
        callbacks.insert(0, train_data)
        callbacks.append(LossFeedback(train_data.sampler, ds))
    elif config == "early_stopping":
        callbacks.append(EarlyStopping(patience=1, min_delta=0.06, criterion="either", rho=1e-4,
                                       window=1))
    callbacks += [CheckpointCallback(directory, every_n_steps=every_n_steps, keep_last=2, monitor="val_loss"),
                  CSVLogger(out_dir), Slow(sleep)]
    trainer = Trainer(model, opt, loss_fn=loss_fn, schedulers=schedulers, callbacks=callbacks,
                      batch_size=16, seed=3, progress=False)
    return trainer, train_data, (x[:30], y[:30])


def run_config(config: str, directory, out_dir, resume=False, sleep=0.0, every_n_steps=1,
               steps_from=0) -> Trainer:
    """Train one configuration for its epochs (resumed from the newest checkpoint if asked),
    checkpointing every epoch and every ``every_n_steps`` steps from step ``steps_from`` on
    (None: epochs only; the cadence changes nothing in the training, only how far back a
    kill sends it)."""
    trainer, train, val = build_config(config, directory, out_dir, sleep,
                                       every_n_steps if steps_from <= 1 else None)
    if every_n_steps and steps_from > 1:
        ckpt = next(c for c in trainer.callbacks if isinstance(c, CheckpointCallback))
        trainer.callbacks.append(StepSavesFrom(ckpt, every_n_steps, steps_from))
    if resume:
        path = latest_checkpoint(directory)
        if path is not None:
            restore(trainer, path)
    trainer.fit(train, val, epochs=epochs_of(config) - trainer.epoch)
    return trainer


def _plain(v):
    """State as plain data that ``torch.load(weights_only=True)`` reads back."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) or type(v).__name__ == "deque":
        return [_plain(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


def _csv(path: Path) -> list[list[str]]:
    """A CSV log's rows without its ``time`` column (seconds differ between any two runs)."""
    if not path.is_file():
        return []
    rows = list(csv.reader(path.open()))
    drop = [i for i, c in enumerate(rows[0]) if c == "time"] if rows else []
    return [[v for i, v in enumerate(r) if i not in drop] for r in rows]


def final_state(trainer: Trainer, out_dir) -> dict:
    """Everything a resumed run must reproduce bitwise: weights, optimizer, schedulers,
    callbacks' states, the global RNGs and the trainer's generators, the history and the
    CSV logs (timings excluded: the ``time`` columns and ``train_seconds``)."""
    hist = copy.deepcopy(trainer.history.to_dict())
    for table in (hist["steps"], hist["epochs"]):
        table.pop("time", None)
    loader = getattr(trainer, "_loader_gens", [])
    opt = copy.deepcopy(trainer.optimizer.state_dict())
    for g in opt["param_groups"]:  # torch's Optimizer.__setstate__ adds this default on load
        g.setdefault("differentiable", False)
    return _plain({
        "weights": trainer.model.state_dict(),
        "optimizer": opt,
        "schedulers": [s.state_dict() for s in trainer.schedulers],
        "callbacks": [(type(c).__name__, c.state_dict()) for c in trainer.callbacks],
        "rng": rng_state(),
        "generators": [trainer.generator.get_state(), *[g.get_state() for g in loader]],
        "history": hist,
        "position": [trainer.epoch, trainer.global_step],
        "csv": {f: _csv(Path(out_dir) / f) for f in ("steps.csv", "epochs.csv")},
    })


if __name__ == "__main__":
    torch.set_num_threads(1)
    directory, out = sys.argv[1], sys.argv[2]
    sleep = float(os.environ.get("DESCEND_TEST_STEP_SLEEP", "0"))
    if "--config" in sys.argv:
        config = sys.argv[sys.argv.index("--config") + 1]
        every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else 1
        start = int(sys.argv[sys.argv.index("--from") + 1]) if "--from" in sys.argv else 0
        logs = Path(out).with_suffix(".logs")
        t = run_config(config, directory, logs, resume="--resume" in sys.argv, sleep=sleep,
                       every_n_steps=every or None, steps_from=start)
        torch.save(final_state(t, logs), out)
    else:
        t = run(directory, resume="--resume" in sys.argv, sleep=sleep)
        torch.save({k: v.clone() for k, v in t.model.state_dict().items()}, out)
