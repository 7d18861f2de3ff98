"""The callback protocol: hooks a training loop calls, their registry, and the monitor base.

This module knows no trainer: :class:`descend.train.Trainer` calls these hooks, and so
can any other training loop.

Hooks, in the order the trainer calls them::

    on_fit_begin(trainer)
      on_epoch_begin(trainer)
        batch = on_batch_begin(trainer, batch) or batch   # may return a new (x, y): noise, augmentation
          (forward, loss = loss_fn(outputs, y))
        loss = on_loss(trainer, loss, batch)             # may add terms: penalties, adversarial loss
          (backward)
        on_after_backward(trainer)           # gradients are in p.grad, before the step
          (optimizer step, schedulers)
        on_batch_end(trainer, logs)          # logs: {"loss", "lr", "grad_norm", ...}
      on_epoch_end(trainer, logs)            # logs: {"train_loss", "val_loss", "val_acc", ...}
    on_fit_end(trainer)                      # after a fit that finished (stopped early included)
    on_fit_error(trainer, error)             # instead, when the fit raised (then it re-raises)

A callback stops training by setting ``trainer.stop_training = True``. Another training
loop (a hand-written one, Lightning's, Hugging Face's) runs the same callbacks through a
:class:`LoopState`, which holds what they read. Callbacks that
watch a metric (early stopping, checkpointing the best, plateau schedules) share
:class:`MonitorCallback`: ``monitor``, ``mode``, ``min_delta`` and ``patience``.
"""

from __future__ import annotations

import math
from typing import Any

from descend._registry import Registry
from descend._validation import check_choice, check_int, check_range

CALLBACKS = Registry("callback")


class Callback:
    """Base class: every hook is a no-op; override the ones you need.

    ``state_dict`` / ``load_state_dict`` let a checkpoint carry the callback's
    counters so that a resumed run continues exactly.

    Example: a callback that counts the epochs it has seen.

    >>> import torch
    >>> from descend.train import Trainer
    >>> class CountEpochs(Callback):
    ...     def __init__(self):
    ...         self.n = 0
    ...     def on_epoch_end(self, trainer, logs):
    ...         self.n += 1
    >>> cb, m = CountEpochs(), torch.nn.Linear(2, 2)
    >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[cb])
    >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=3)
    >>> cb.n
    3
    """

    def on_fit_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer) -> None: ...
    def on_batch_begin(self, trainer, batch):
        """Return a replacement ``(x, y)`` batch, or None to keep it."""
        return None

    def on_loss(self, trainer, loss, batch):
        """Return the loss to back-propagate (default: unchanged)."""
        return loss

    def on_after_backward(self, trainer) -> None: ...
    def on_batch_end(self, trainer, logs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer, logs: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer) -> None: ...

    def on_fit_error(self, trainer, error: BaseException) -> None:
        """Release what ``on_fit_begin`` took (hooks, signal handlers, files) after a fit
        that raised ``error``; the trainer re-raises it. Unlike ``on_fit_end``, nothing
        that assumes a finished fit (restoring best weights, a final save) belongs here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class MonitorCallback(Callback):
    """Base for callbacks that watch one logged metric.

    An epoch *improves* when ``value < best - min_delta`` (``mode="min"``) or
    ``value > best + min_delta`` (``mode="max"``); ``wait`` counts epochs since the last
    improvement and :meth:`patience_exhausted` is true once ``wait >= patience``.

    Args:
        monitor: key of the epoch logs to watch (default ``"val_loss"``).
        mode: ``"min"`` or ``"max"``.
        min_delta: the smallest change that counts as an improvement (>= 0).
        patience: epochs without improvement that are tolerated (>= 0).

    Example:
        >>> m = MonitorCallback(monitor="val_loss", patience=1)
        >>> [m.update(v) for v in (1.0, 0.5, 0.6, 0.7)]
        [True, True, False, False]
        >>> m.best, m.wait, m.patience_exhausted
        (0.5, 2, True)
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", min_delta: float = 0.0,
                 patience: int = 0):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a non-empty string. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.mode = check_choice("mode", mode, ["min", "max"])
        self.min_delta = float(check_range("min_delta", min_delta, ge=0))
        self.patience = check_int("patience", patience, ge=0)
        self.reset()

    def reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0

    def is_improvement(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int | None = None) -> bool:
        """Record ``value``; return whether it improved on the best so far."""
        value = float(value)
        if math.isnan(value):
            self.wait += 1
            return False
        if self.is_improvement(value):
            self.best = value
            self.best_epoch = epoch if epoch is not None else self.best_epoch + 1
            self.wait = 0
            return True
        self.wait += 1
        return False

    def value_from(self, logs: dict[str, Any]) -> float:
        """The monitored value in ``logs``, with a clear error if it is missing."""
        if self.monitor not in logs:
            keys = ", ".join(sorted(logs))
            raise KeyError(
                f"`monitor` names a metric that is not logged. Received: monitor={self.monitor!r}; "
                f"logged: {keys}"
            )
        return float(logs[self.monitor])

    @property
    def patience_exhausted(self) -> bool:
        return self.wait >= max(self.patience, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]


class LoopState:
    """The loop a callback sees, for training loops other than :class:`descend.train.Trainer`.

    descend's callbacks read ``trainer.model``, ``trainer.optimizer``,
    ``trainer.global_step`` (optimizer steps completed), ``trainer.epoch`` (epochs
    completed) and, for some, ``trainer.loss_fn``, ``trainer.device``,
    ``trainer.callbacks`` and ``trainer.schedulers``; they stop training by setting
    ``trainer.stop_training`` and publish tables in ``trainer.history.monitors``. A
    ``LoopState`` holds exactly that, so any loop (a hand-written one, Lightning's,
    Hugging Face's: see ``descend.integrations``) can run them: keep ``global_step`` and
    ``epoch`` current and call the hooks with :meth:`call`, in the order of the module
    docstring.

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its optimizer (may be set later, before the first hook that reads it).
        callbacks: the callbacks :meth:`call` runs, in order.
        loss_fn: ``loss_fn(outputs, targets)``, for callbacks that evaluate the loss
            themselves (the loss-feedback sampler); default None.
        device: default: the device of the model's first parameter (else cpu).
        schedulers: objects with ``.step()`` that callbacks may adjust (default none).
        history: where the tables go: an object with ``steps``, ``epochs`` and ``monitors``
            dicts (default: a new :class:`LoopHistory`).

    Example: the gradient-norm monitor in a hand-written loop.

    >>> import torch
    >>> from descend.train import GradientNormMonitor
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> loop = LoopState(model, opt, callbacks=[GradientNormMonitor(interval=2)])
    >>> loop.call("on_fit_begin")
    >>> for step in range(4):
    ...     opt.zero_grad()
    ...     loss = loop.call("on_loss", model(torch.ones(4, 3)).pow(2).mean(), None)
    ...     loss.backward()
    ...     loop.call("on_after_backward")
    ...     opt.step()
    ...     loop.global_step += 1
    ...     loop.call("on_batch_end", {"loss": loss})
    >>> loop.call("on_fit_end")
    >>> loop.history.monitors["grad_norm"]["step"]
    [0, 2]
    """

    def __init__(self, model, optimizer=None, *, callbacks=(), loss_fn=None, device=None,
                 schedulers=(), history=None):
        for c in callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"`callbacks` must be descend.callbacks.Callback instances. "
                                f"Received: {type(c).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.callbacks = list(callbacks)
        self.loss_fn = loss_fn
        if device is None:
            first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
            device = first.device if first is not None else "cpu"
        self.device = device
        self.schedulers = list(schedulers)
        if history is None:
            history = LoopHistory()
        self.history = history
        self.global_step = 0
        self.epoch = 0
        self.batch_index = 0
        self.stop_training = False

    def call(self, hook: str, *args):
        """Run ``hook`` on every callback in order, with this state as the trainer.

        ``on_batch_begin(batch)`` returns the batch (replaced where a callback returned
        one), ``on_loss(loss, batch)`` the loss with every callback's terms; the other
        hooks return None.
        """
        if hook not in _HOOKS:
            raise ValueError(f"`hook` must be one of {', '.join(_HOOKS)}. Received: hook={hook!r}")
        if hook == "on_batch_begin":
            (batch,) = args
            for cb in self.callbacks:
                new = cb.on_batch_begin(self, batch)
                if new is not None:
                    batch = new
            return batch
        if hook == "on_loss":
            loss, batch = args
            for cb in self.callbacks:
                new = cb.on_loss(self, loss, batch)
                if new is not None:
                    loss = new
            return loss
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)
        return None


_HOOKS = ("on_fit_begin", "on_epoch_begin", "on_batch_begin", "on_loss", "on_after_backward",
          "on_batch_end", "on_epoch_end", "on_fit_end", "on_fit_error")


class LoopHistory:
    """A loop's ``steps``, ``epochs`` and ``monitors`` tables (name -> list), as the Trainer's
    :class:`~descend.train.History` holds them; what ``CSVLogger`` and ``save_monitors``
    write and ``descend doctor`` reads.

    Example:
        >>> h = LoopHistory()
        >>> h.append("steps", {"step": 1, "loss": 2.0})
        >>> h.append("steps", {"step": 2, "lr": 0.1})
        >>> h.steps
        {'step': [1, 2], 'loss': [2.0, nan], 'lr': [nan, 0.1]}
    """

    def __init__(self):
        self.steps: dict[str, list] = {}
        self.epochs: dict[str, list] = {}
        self.monitors: dict[str, dict[str, list]] = {}

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Append ``row`` to ``"steps"`` or ``"epochs"``; a key missing on either side is
        NaN in that row."""
        if table not in ("steps", "epochs"):
            raise ValueError(f"`table` must be 'steps' or 'epochs'. Received: table={table!r}")
        cols = getattr(self, table)
        n = len(next(iter(cols.values()))) if cols else 0
        for k, v in row.items():
            cols.setdefault(k, [math.nan] * n).append(v)
        for col in cols.values():
            if len(col) < n + 1:
                col.append(math.nan)
