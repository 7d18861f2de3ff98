"""Early stopping (notes 001 and 003), the two ways of notes 001 to reuse the
validation data afterwards, and notes 003's "train a fixed number of further epochs
after the criterion, possibly at a lower learning rate" (:func:`train_after_stopping`).

Criteria (notes 003, "When to stop?"):

* error change: stop when the monitored validation error has not improved by more
  than ``min_delta`` for ``patience`` epochs (a window of, say, 10 epochs);
* weight change: compare the weights at epochs ``t - k`` and ``t`` and stop when
  ``max_i |w_i^t - w_i^(t-k)| < rho`` (absolute), or
  ``max_i |w_i^t - w_i^(t-k)| < rho ||w^t||_2`` (relative to the weight norm).
  The max over single weights, not the length of the whole change vector.

Whatever stops the run, the parameters (and buffers) of the best epoch are restored
exactly at the end (``restore_best=True``), as notes 001 asks: "returning to the
parameter setting at the point in time with the lowest validation set error".
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

import torch
from torch.utils.data import TensorDataset

from descend._validation import check_bool, check_choice, check_int, check_range, fail
from descend.callbacks import CALLBACKS, Callback, MonitorCallback


@CALLBACKS.register("early_stopping")
class EarlyStopping(MonitorCallback):
    """Stop training by the error-change and/or weight-change criterion; restore the best.

    Args:
        monitor: epoch-log key to watch (default ``"val_loss"``). mode: ``"min"``/``"max"``.
        min_delta: smallest change counted as an improvement (default 0).
        patience: epochs without improvement before stopping (default 10).
        criterion: ``"error"`` (default), ``"weight"``, or ``"either"`` (stop on the
            first criterion met).
        rho: weight-change threshold (> 0, default 1e-3). window: ``k`` epochs between
            compared weights (>= 1, default 10). relative: compare with ``rho ||w^t||_2``
            instead of ``rho`` (default False).
        restore_best: load the best epoch's parameters and buffers at the end (default True).

    After ``fit``: ``best_epoch``, ``best_step`` (global step at the best epoch),
    ``best`` (its value), ``stopped_epoch`` (or -1) and ``stop_reason``.

    Each fit starts afresh, except the first fit after a checkpoint was restored
    (``trainer.resuming``): then the counters, the best weights and the weight snapshots
    of the checkpoint carry on, and a run that had stopped stays stopped.

    Example:
        >>> from descend.train import Trainer
        >>> x = torch.randn(64, 3); y = (x[:, 0] > 0).long(); m = torch.nn.Linear(3, 2)
        >>> es = EarlyStopping(patience=2)
        >>> _ = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[es]).fit(
        ...     (x, y), (x, y), epochs=5)
        >>> es.best_epoch >= 1
        True

    Differences: Keras' ``EarlyStopping`` has no weight-change criterion and restores
    only when it stops; here the best weights are restored at the end of every fit.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", min_delta: float = 0.0,
                 patience: int = 10, criterion: str = "error", rho: float = 1e-3,
                 window: int = 10, relative: bool = False, restore_best: bool = True):
        super().__init__(monitor=monitor, mode=mode, min_delta=min_delta, patience=patience)
        self.criterion = check_choice("criterion", criterion, ["error", "weight", "either"])
        self.rho = float(check_range("rho", rho, gt=0))
        self.window = check_int("window", window, ge=1)
        self.relative = check_bool("relative", relative)
        self.restore_best = check_bool("restore_best", restore_best)
        self._clear()

    def _clear(self) -> None:
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step = -1
        self.stopped_epoch = -1
        self.stop_reason = ""
        self.last_weight_change = math.nan
        self._snapshots: deque = deque(maxlen=self.window + 1)

    def on_fit_begin(self, trainer) -> None:
        if getattr(trainer, "resuming", False):  # restored from a checkpoint: carry on
            if self.stopped_epoch >= 0:  # the run had stopped: stay stopped
                trainer.stop_training = True
            return
        self.reset()
        self._clear()

    def weight_change(self) -> float:
        """``max_i |w_i^t - w_i^(t-k)|`` (divided by ``||w^t||_2`` when relative); NaN before k epochs."""
        if len(self._snapshots) <= self.window:
            return math.nan
        new, old = self._snapshots[-1], self._snapshots[0]
        delta = float((new - old).abs().max()) if new.numel() else 0.0
        if self.relative:
            norm = float(new.norm())
            return delta / norm if norm > 0 else math.inf
        return delta

    def on_epoch_end(self, trainer, logs: dict[str, Any]) -> None:
        use_error = self.criterion in ("error", "either")
        if use_error or self.monitor in logs:
            if self.update(self.value_from(logs), epoch=int(trainer.epoch)):
                self.best_step = int(trainer.global_step)
                if self.restore_best:
                    self.best_state = {k: v.detach().clone()
                                       for k, v in trainer.model.state_dict().items()}
        if use_error and self.patience_exhausted:
            self._stop(trainer, f"{self.monitor} did not improve by more than {self.min_delta} "
                                f"for {self.wait} epochs")
            return
        if self.criterion in ("weight", "either"):
            with torch.no_grad():
                flat = [p.detach().reshape(-1) for p in trainer.model.parameters()]
                self._snapshots.append(torch.cat(flat).clone() if flat else torch.zeros(0))
            self.last_weight_change = self.weight_change()
            if not math.isnan(self.last_weight_change) and self.last_weight_change < self.rho:
                kind = "relative " if self.relative else ""
                self._stop(trainer, f"max {kind}weight change over {self.window} epochs "
                                    f"{self.last_weight_change:.3g} < rho={self.rho}")

    def _stop(self, trainer, reason: str) -> None:
        trainer.stop_training = True
        self.stopped_epoch = int(trainer.epoch)
        self.stop_reason = reason

    def on_fit_end(self, trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(best_step=self.best_step, stopped_epoch=self.stopped_epoch,
                     stop_reason=self.stop_reason, last_weight_change=self.last_weight_change,
                     best_state=self.best_state, snapshots=list(self._snapshots))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_step = state["best_step"]
        self.stopped_epoch = state["stopped_epoch"]
        self.stop_reason = state.get("stop_reason", "")
        self.last_weight_change = state.get("last_weight_change", math.nan)
        self.best_state = state["best_state"]
        self._snapshots = deque(state["snapshots"], maxlen=self.window + 1)


class StopAfterSteps(Callback):
    """Stop once ``trainer.global_step`` reaches ``steps`` (used to retrain for a step count).

    >>> from descend.train import Trainer
    >>> m = torch.nn.Linear(2, 2)
    >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=4, callbacks=[StopAfterSteps(5)])
    >>> _ = t.fit((torch.randn(16, 2), torch.zeros(16, dtype=torch.long)), epochs=10)  # 4 steps per epoch
    >>> t.global_step, t.epoch
    (5, 2)
    """

    def __init__(self, steps: int):
        self.steps = check_int("steps", steps, ge=0)

    def on_batch_end(self, trainer, logs) -> None:
        if trainer.global_step >= self.steps:
            trainer.stop_training = True


def _tensors(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(data)
    fail(name, "a TensorDataset of (x, y) or an (x, y) pair of tensors", type(data).__name__, TypeError)


def _union(train_data, val_data) -> tuple[torch.Tensor, torch.Tensor]:
    xt, yt = _tensors(train_data, "train_data")
    xv, yv = _tensors(val_data, "val_data")
    return torch.cat([xt, xv]), torch.cat([yt, yv])


def _early_stop(trainer, train_data, val_data, max_epochs, es_kwargs) -> EarlyStopping:
    es = EarlyStopping(**es_kwargs)
    trainer.callbacks.append(es)
    try:
        trainer.fit(train_data, val_data, epochs=max_epochs)
    finally:
        trainer.callbacks.remove(es)
    if es.best_epoch < 1:
        fail("val_data", f"data on which `{es.monitor}` improves at least once", "no improvement")
    return es


def retrain_on_all(make_trainer: Callable[[], Any], train_data, val_data, *, max_epochs: int,
                   unit: str = "steps", **early_stopping) -> tuple[Any, dict[str, Any]]:
    """Early-stop, then retrain from scratch on train + validation data to the same point.

    Notes 001, first strategy (Goodfellow et al., *Deep Learning*, Algorithm 7.2):
    1. train a fresh model on ``train_data`` with early stopping on ``val_data``; the
       best point is ``i*`` steps (``best_step``) or epochs (``best_epoch``);
    2. build a *fresh* trainer and train on the union for ``i*`` steps (``unit="steps"``)
       or ``i*`` epochs (``unit="epochs"``): the notes' open question, both offered.

    Args:
        make_trainer: ``() -> Trainer`` building a new model, optimizer and trainer each call.
        train_data, val_data: TensorDatasets or ``(x, y)`` pairs.
        max_epochs: epoch budget of the early-stopping run (>= 1).
        unit: ``"steps"`` (default, same number of parameter updates) or ``"epochs"``.
        **early_stopping: :class:`EarlyStopping` arguments (patience, min_delta, ...).

    Returns:
        ``(trainer, info)``: the retrained trainer, and ``{"best_epoch", "best_step",
        "retrain_epochs", "retrain_steps"}``.

    Example:
        >>> from descend.train import Trainer
        >>> def make():
        ...     torch.manual_seed(0); m = torch.nn.Linear(2, 2)
        ...     return Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=8)
        >>> x = torch.randn(40, 2); y = (x[:, 0] > 0).long()
        >>> t, info = retrain_on_all(make, (x[:32], y[:32]), (x[32:], y[32:]), max_epochs=3)
        >>> info["retrain_steps"] == info["best_step"]
        True
    """
    check_int("max_epochs", max_epochs, ge=1)
    check_choice("unit", unit, ["steps", "epochs"])
    first = make_trainer()
    es = _early_stop(first, train_data, val_data, max_epochs, early_stopping)
    all_data = _union(train_data, val_data)
    trainer = make_trainer()
    if trainer is first or trainer.model is first.model:
        fail("make_trainer", "a factory returning a new trainer and model on each call", make_trainer)
    if unit == "epochs":
        trainer.fit(all_data, epochs=es.best_epoch)
    else:
        stopper = StopAfterSteps(es.best_step)
        trainer.callbacks.append(stopper)
        try:
            trainer.fit(all_data, epochs=es.best_step)  # at least one step per epoch
        finally:
            trainer.callbacks.remove(stopper)
    info = {"best_epoch": es.best_epoch, "best_step": es.best_step,
            "retrain_epochs": int(trainer.epoch), "retrain_steps": int(trainer.global_step)}
    return trainer, info


def continue_on_all(trainer, train_data, val_data, *, max_epochs: int, max_extra_epochs: int = 100,
                    until: str = "train_below_val", **early_stopping) -> dict[str, Any]:
    """Early-stop, then keep training from the best point on train + validation data.

    Notes 001, second strategy (Goodfellow et al., *Deep Learning*, Algorithm 7.3):
    after early stopping (best parameters restored), record a target at that point and
    train on the union one epoch at a time until it is met (or ``max_extra_epochs``):

    * ``until="train_below_val"`` (default): the loss on the whole training data (train +
      validation, evaluated after each epoch) falls below the validation loss at the
      stopping point;
    * ``until="val_below_train"``: Algorithm 7.3 as printed, ``eps = J(train_data)`` at the
      stopping point, continue until ``J(val_data) < eps``.

    Cheaper than retraining, but, as the notes warn, not well behaved: the target may
    never be reached, hence the cap.

    Args:
        trainer: a fresh trainer (its model is trained in place).
        train_data, val_data: TensorDatasets or ``(x, y)`` pairs.
        max_epochs: epoch budget of the early-stopping run (>= 1).
        max_extra_epochs: cap on the continued training (>= 0, default 100).
        until: ``"train_below_val"`` or ``"val_below_train"``.
        **early_stopping: :class:`EarlyStopping` arguments.

    Returns:
        ``{"best_epoch", "best_step", "target", "extra_epochs", "reached", "final"}``.

    Example:
        >>> from descend.train import Trainer
        >>> torch.manual_seed(0); m = torch.nn.Linear(2, 2)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=8)
        >>> x = torch.randn(40, 2); y = (x[:, 0] > 0).long()
        >>> info = continue_on_all(t, (x[:32], y[:32]), (x[32:], y[32:]), max_epochs=3, max_extra_epochs=5)
        >>> info["best_epoch"], info["extra_epochs"], info["reached"], info["final"] < info["target"]
        (3, 1, True, True)
    """
    check_int("max_epochs", max_epochs, ge=1)
    check_int("max_extra_epochs", max_extra_epochs, ge=0)
    check_choice("until", until, ["train_below_val", "val_below_train"])
    es = _early_stop(trainer, train_data, val_data, max_epochs, early_stopping)
    all_data = _union(train_data, val_data)
    if until == "train_below_val":
        target = trainer.evaluate(val_data)["loss"]
        watched = lambda: trainer.evaluate(all_data)["loss"]  # noqa: E731
    else:
        target = trainer.evaluate(train_data)["loss"]
        watched = lambda: trainer.evaluate(val_data)["loss"]  # noqa: E731
    value = watched()
    extra = 0
    while value >= target and extra < max_extra_epochs:
        trainer.fit(all_data, epochs=1)
        extra += 1
        value = watched()
    return {"best_epoch": es.best_epoch, "best_step": es.best_step, "target": float(target),
            "extra_epochs": extra, "reached": bool(value < target), "final": float(value)}


def train_after_stopping(trainer, train_data, val_data, *, max_epochs: int, extra_epochs: int,
                         lr_factor: float = 1.0, start: str = "last", **early_stopping) -> dict[str, Any]:
    """Early-stop, then train a fixed number of further epochs, possibly at a lower LR.

    Notes 003 ("When to stop?", error-change criterion): "Train for a fixed number of
    epochs after criterion is reached (possibly with lower learning rate)":

    1. train on ``train_data`` with :class:`EarlyStopping` on ``val_data`` until the
       criterion is met (or ``max_epochs``);
    2. from the weights where it stopped (``start="last"``, the notes' reading) or from
       the best epoch's weights (``start="best"``), multiply the learning rate of every
       parameter group by ``lr_factor`` and train ``extra_epochs`` more epochs on the
       same data, still validating.

    Beside the two reuse strategies of notes 001 (:func:`retrain_on_all`,
    :func:`continue_on_all`), which fold the validation data into training; this one
    keeps the validation set for validation. ``lr_factor`` scales the optimizer's
    ``param_groups``; a per-step LR schedule attached to the trainer would overwrite it
    at the next step, so with a schedule, scale the schedule instead.

    Args:
        trainer: a fresh trainer (its model is trained in place).
        train_data, val_data: what ``Trainer.fit`` accepts.
        max_epochs: epoch budget of the early-stopping run (>= 1).
        extra_epochs: epochs trained after the criterion (>= 0).
        lr_factor: learning-rate multiplier for the extra epochs (> 0, default 1: same LR;
            e.g. 0.1).
        start: ``"last"`` (default) or ``"best"``.
        **early_stopping: :class:`EarlyStopping` arguments (patience, min_delta, ...).

    Returns:
        ``{"stopped_epoch", "best_epoch", "criterion_met", "stop_reason", "extra_epochs",
        "lr", "final"}`` (``stopped_epoch`` is -1 when the criterion was not met within
        ``max_epochs``; ``lr``: the learning rates of the extra epochs; ``final``: the
        last epoch's logs).

    Example:
        >>> from descend.train import Trainer
        >>> torch.manual_seed(0); m = torch.nn.Linear(2, 2)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=8)
        >>> x = torch.randn(40, 2); y = torch.randint(0, 2, (40,))   # nothing to learn: stops early
        >>> info = train_after_stopping(t, (x[:32], y[:32]), (x[32:], y[32:]), max_epochs=30, patience=2,
        ...                             extra_epochs=3, lr_factor=0.1)
        >>> info["criterion_met"], t.epoch == info["stopped_epoch"] + 3, info["lr"]
        (True, True, [0.010000000000000002])
    """
    check_int("max_epochs", max_epochs, ge=1)
    check_int("extra_epochs", extra_epochs, ge=0)
    check_range("lr_factor", lr_factor, gt=0)
    check_choice("start", start, ["last", "best"])
    if "restore_best" in early_stopping:
        fail("restore_best", "left out (use start='best' or start='last')", early_stopping["restore_best"],
             TypeError)
    es = _early_stop(trainer, train_data, val_data, max_epochs, {**early_stopping, "restore_best": start == "best"})
    for group in trainer.optimizer.param_groups:
        group["lr"] = group["lr"] * float(lr_factor)
    if extra_epochs:
        trainer.fit(train_data, val_data, epochs=extra_epochs)
    epochs = trainer.history.epochs
    final = {k: v[-1] for k, v in epochs.items() if v}
    return {"stopped_epoch": es.stopped_epoch, "best_epoch": es.best_epoch, "criterion_met": es.stopped_epoch > 0,
            "stop_reason": es.stop_reason, "extra_epochs": extra_epochs,
            "lr": [g["lr"] for g in trainer.optimizer.param_groups], "final": final}


__all__ = ["EarlyStopping", "StopAfterSteps", "retrain_on_all", "continue_on_all", "train_after_stopping"]
