"""What the Lightning and Hugging Face adapters share: descend callbacks driven through a
:class:`~descend.callbacks.LoopState`, the run's step and epoch tables, the files
``descend doctor`` reads, and the state that goes into the host's checkpoints.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Sequence

from descend.callbacks import Callback, LoopHistory, LoopState
from descend.train.checkpoint import _match_callbacks
from descend.train.logging import CSVLogger
from descend.train.monitors import light_monitors, save_monitors


def hyper(optimizer) -> tuple[float, float]:
    """``lr`` and momentum (``momentum`` or ``betas[0]``) of the first param group."""
    g = optimizer.param_groups[0] if optimizer is not None and optimizer.param_groups else {}
    lr = g.get("lr", math.nan)
    mom = g.get("momentum")
    if mom is None and "betas" in g:
        mom = g["betas"][0]
    return float(lr), (math.nan if mom is None else float(mom))


def number(v) -> float | None:
    """A logged value as a float (0-d tensors included); None for anything else."""
    if hasattr(v, "numel") and hasattr(v, "item"):
        return float(v.item()) if v.numel() == 1 else None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


class Bridge:
    """Drive descend callbacks from another trainer's hooks and keep the run's logs.

    Args:
        callbacks: descend callbacks (default: :func:`descend.train.monitors.light_monitors`
            with ``interval``: what ``descend doctor`` needs).
        directory: the folder for ``steps.csv``, ``epochs.csv`` and ``monitors.json``
            (None: the host's choice).
        interval: the monitors' sampling interval when ``callbacks`` is None.
        loss_fn: given to callbacks that evaluate the loss themselves (the loss-feedback
            sampler).
    """

    def __init__(self, callbacks: Sequence[Callback] | None, directory, interval: int,
                 loss_fn=None):
        callbacks = light_monitors(interval) if callbacks is None else list(callbacks)
        for c in callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"`callbacks` must be descend.callbacks.Callback instances. "
                                f"Received: {type(c).__name__}")
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"`directory` must be a path or None. Received: directory={directory!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable or None. Received: loss_fn={loss_fn!r}")
        self.callbacks = callbacks
        self.directory = None if directory is None else os.fspath(directory)
        self.loss_fn = loss_fn
        self.history = LoopHistory()
        self.loop: LoopState | None = None
        self._saved: dict[str, Any] | None = None
        self._csv: CSVLogger | None = None

    # -- the run -----------------------------------------------------------------------
    def begin(self, model, optimizer, *, global_step: int, epoch: int, device=None,
              schedulers=()) -> LoopState:
        """Make the loop state, run ``on_fit_begin``, then load a resumed run's state."""
        self.loop = LoopState(model, optimizer, callbacks=self.callbacks, loss_fn=self.loss_fn,
                              device=device, schedulers=schedulers, history=self.history)
        self.loop.global_step, self.loop.epoch = int(global_step), int(epoch)
        self.loop.call("on_fit_begin")
        if self._saved is not None:
            # after on_fit_begin, which resets some callbacks (early stopping) and
            # publishes the monitors' tables: the loaded state is what stays
            for cb, st in _match_callbacks(self.callbacks, self._saved["callbacks"], "the checkpoint"):
                cb.load_state_dict(st)
            self._saved = None
        return self.loop

    def step_row(self, row: dict[str, Any]) -> None:
        self.history.append("steps", row)

    def update_last_step(self, values: dict[str, Any]) -> None:
        """Set ``values`` in the last step row (new columns are NaN in earlier rows)."""
        steps = self.history.steps
        n = len(steps.get("step", []))
        if not n:
            return
        for k, v in values.items():
            steps.setdefault(k, [math.nan] * n)[n - 1] = v

    def epoch_row(self, row: dict[str, Any]) -> None:
        self.history.append("epochs", row)

    def epoch_train_loss(self, epoch: int) -> float:
        """Mean of the step losses recorded in ``epoch`` (1-based); NaN if none."""
        steps = self.history.steps
        vals = [v for e, v in zip(steps.get("epoch", []), steps.get("loss", []))
                if e == epoch and isinstance(v, float) and math.isfinite(v)]
        return sum(vals) / len(vals) if vals else math.nan

    def write(self, directory=None) -> str | None:
        """Write ``steps.csv``, ``epochs.csv`` and ``monitors.json``; return the folder."""
        directory = directory if directory is not None else self.directory
        if directory is None or self.loop is None:
            return None
        directory = os.fspath(directory)
        if self._csv is None or self._csv.directory != directory:
            self._csv = CSVLogger(directory)
            self._csv.on_fit_begin(self.loop)
        self._csv.on_epoch_end(self.loop, {})
        save_monitors(self.history.monitors, directory)
        return directory

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The logs so far and every callback's state (plain data and tensors)."""
        return {"steps": copy.deepcopy(self.history.steps),
                "epochs": copy.deepcopy(self.history.epochs),
                "callbacks": [{"class": type(c).__name__, "state": c.state_dict()}
                              for c in self.callbacks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep ``state`` for :meth:`begin` (the callbacks' hooks have not run yet)."""
        self.history.steps = copy.deepcopy(state["steps"])
        self.history.epochs = copy.deepcopy(state["epochs"])
        self._saved = {"callbacks": state["callbacks"]}
        self._csv = None  # rewrite the files whole on the next write
