"""Averages of the weights along the optimization path: Polyak and exponential (EMA).

* Polyak (uniform) average: ``w_bar_t = (1/t) sum_{s=1..t} w_s``, computed as
  ``w_bar_t = w_bar_{t-1} + (w_t - w_bar_{t-1}) / t`` (Polyak & Juditsky, 1992).
* Exponential moving average: ``w_bar_t = d w_bar_{t-1} + (1 - d) w_t`` with
  ``w_bar_0 = w_0`` (the "moving average" post-processing of notes 000).

The average is kept beside the model; :meth:`WeightAverage.copy_to` or the
:meth:`WeightAverage.swapped` context put it into the model to evaluate it. Buffers
(batch-norm running statistics) are not averaged: they are taken from the model, as
``torch.optim.swa_utils.AveragedModel(use_buffers=False)`` does; recompute them with
``torch.optim.swa_utils.update_bn`` if needed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from descend._validation import check_bool, check_choice, check_int, check_range, fail
from descend.callbacks import CALLBACKS, Callback


class WeightAverage:
    """Running Polyak or EMA average of a model's parameters.

    Args:
        model: the module whose parameters are averaged.
        mode: ``"ema"`` (default) or ``"polyak"``.
        decay: EMA decay ``d`` in [0, 1), default 0.999 (ignored for Polyak).
        start: number of :meth:`update` calls to skip before averaging begins (>= 0,
            default 0); the first averaged call sets ``w_bar = w``.

    Example:
        >>> m = nn.Linear(2, 1); avg = WeightAverage(m, mode="polyak")
        >>> avg.update(); avg.num_averaged
        1

    Equals ``torch.optim.swa_utils.AveragedModel`` with its default (Polyak) or
    ``get_ema_multi_avg_fn(decay)`` (EMA) averaging function on the parameters.
    """

    def __init__(self, model: nn.Module, mode: str = "ema", decay: float = 0.999, start: int = 0):
        if not isinstance(model, nn.Module):
            fail("model", "a torch.nn.Module", type(model).__name__, TypeError)
        self.model = model
        self.mode = check_choice("mode", mode, ["ema", "polyak"])
        self.decay = float(check_range("decay", decay, ge=0, lt=1))
        self.start = check_int("start", start, ge=0)
        self.calls = 0
        self.num_averaged = 0
        self.averages = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current parameters into the average."""
        self.calls += 1
        if self.calls <= self.start:
            return
        params = [p.detach() for p in self.model.parameters()]
        if self.num_averaged == 0:
            for a, p in zip(self.averages, params):
                a.copy_(p)
        elif self.mode == "ema":
            torch._foreach_lerp_(self.averages, params, 1.0 - self.decay)
        else:
            torch._foreach_lerp_(self.averages, params, 1.0 / (self.num_averaged + 1))
        self.num_averaged += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the averaged parameters into ``model`` (default: the tracked model)."""
        target = self.model if model is None else model
        for p, a in zip(target.parameters(), self.averages):
            p.copy_(a)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """Temporarily put the averaged parameters into the model (e.g. to evaluate it)."""
        saved = [p.detach().clone() for p in self.model.parameters()]
        self.copy_to()
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for p, s in zip(self.model.parameters(), saved):
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {"calls": self.calls, "num_averaged": self.num_averaged,
                "averages": [a.clone() for a in self.averages]}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.num_averaged = state["calls"], state["num_averaged"]
        for a, s in zip(self.averages, state["averages"]):
            a.copy_(s)


@CALLBACKS.register("ema")
class EMA(Callback):
    """Trainer callback: average the weights after every optimizer step (EMA or Polyak).

    Args:
        mode: ``"ema"`` (default) or ``"polyak"``. decay: EMA decay, default 0.999.
        start: steps skipped before averaging (default 0).
        apply_at_end: copy the average into the model when ``fit`` ends (default True).

    Example:
        >>> cb = EMA(decay=0.99)
    """

    def __init__(self, mode: str = "ema", decay: float = 0.999, start: int = 0,
                 apply_at_end: bool = True):
        check_choice("mode", mode, ["ema", "polyak"])
        check_range("decay", decay, ge=0, lt=1)
        check_int("start", start, ge=0)
        self.kwargs = {"mode": mode, "decay": decay, "start": start}
        self.apply_at_end = check_bool("apply_at_end", apply_at_end)
        self.average: WeightAverage | None = None
        self._pending: dict | None = None

    def on_fit_begin(self, trainer) -> None:
        if self.average is None or self.average.model is not trainer.model:
            self.average = WeightAverage(trainer.model, **self.kwargs)
        if self._pending:
            self.average.load_state_dict(self._pending)
            self._pending = None

    def on_batch_end(self, trainer, logs) -> None:
        self.average.update()

    def on_fit_end(self, trainer) -> None:
        if self.apply_at_end and self.average is not None and self.average.num_averaged:
            self.average.copy_to()

    def state_dict(self) -> dict:
        return {} if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state and self.average is not None:
            self.average.load_state_dict(state)
        elif state:
            self._pending = state


__all__ = ["WeightAverage", "EMA"]
