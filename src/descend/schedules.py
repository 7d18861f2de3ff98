"""Schedules: pure ``step -> value`` functions for the learning rate, momentum and batch size.

Every schedule is an object ``sched(t) -> float`` (``t``: an int step or epoch count,
``t >= 0``), pure (same ``t``, same value) except :class:`Plateau`, which is driven by a
monitored metric. They compose (:func:`warmup`, :func:`join`, :func:`sequence`) and are
applied to any ``torch.optim.Optimizer`` by :class:`Scheduler`, or by :class:`LRScheduler`,
a ``torch.optim.lr_scheduler.LRScheduler`` that Lightning and Hugging Face accept.

The formulas are the notes' (1/t decay and exponential decay in the SNU lecture, linear
decay to ``tau`` in the CASIA lecture, the 0.5 -> 0.9 momentum schedule and growing batch
size in "Practical Aspects", warmup and cyclical learning rates in the Sun (2019)
summary); see ``docs/schedules.md`` for where they differ from ``torch.optim.lr_scheduler``.

Example:
    >>> import torch
    >>> from descend import schedules as S
    >>> lr = S.warmup(S.cosine(0.1, total=90), steps=10)
    >>> [round(lr(t), 4) for t in (0, 5, 10, 55, 100)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.5)
    >>> sch = S.Scheduler(opt, {"lr": lr, "momentum": S.momentum_ramp(steps=100)})
    >>> sch.step(); opt.param_groups[0]["lr"]
    0.01
"""

from __future__ import annotations

import bisect
import math
from numbers import Integral
from typing import Any, Callable, Mapping, Sequence

import torch

from descend._registry import Registry
from descend._validation import (
    check_bool, check_choice, check_int, check_range, check_real, fail,
)
from descend.callbacks import MonitorCallback

SCHEDULES = Registry("schedule")


def _check_step(t: Any) -> int:
    if isinstance(t, bool) or not isinstance(t, Integral):
        fail("t", "an integer step count", t, TypeError)
    if t < 0:
        fail("t", "an integer >= 0", t)
    return int(t)


def _real(name: str, value: Any) -> float:
    check_real(name, value)
    return float(value.item()) if hasattr(value, "item") else float(value)


def _toward_zero(e0: float) -> tuple[float, float]:
    return (min(e0, 0.0), max(e0, 0.0))


# The range of each hyperparameter a schedule may set (the optimizers' own checks); a key
# not listed only has to be finite. Add a line here for a new hyperparameter.
HYPER_RANGES: dict[str, dict[str, float]] = {
    "lr": {"ge": 0.0},
    "momentum": {"ge": 0.0, "le": 1.0},   # also betas[0] of Adam-like groups
    "dampening": {"ge": 0.0, "le": 1.0},
    "weight_decay": {"ge": 0.0},
    "eps": {"ge": 0.0},
    "alpha": {"ge": 0.0, "le": 1.0},
    "rho": {"ge": 0.0, "le": 1.0},
    "lr_decay": {"ge": 0.0},
}


def _range_text(key: str) -> str:
    r = HYPER_RANGES.get(key, {})
    return " and ".join(f"{'>=' if op == 'ge' else '<='} {v:g}" for op, v in r.items())


def _in_range(key: str, v: float) -> bool:
    r = HYPER_RANGES.get(key, {})
    return math.isfinite(v) and v >= r.get("ge", -math.inf) and v <= r.get("le", math.inf)


def _as_schedule(name: str, value: Any) -> "Schedule":
    """A schedule from a schedule object, a number (constant) or a spec dict."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, Mapping):
        return create(value)
    if isinstance(value, Integral) and not isinstance(value, bool) or isinstance(value, float):
        return Constant(value)
    fail(name, "a schedule, a number or a {'name': ...} spec", value, TypeError)


class Schedule:
    """Base class: a callable ``t -> float`` with a readable ``repr``.

    Subclasses implement :meth:`value` and set ``self._args`` (the constructor's
    arguments, for ``repr``). Calling the schedule validates ``t`` (an int >= 0).

    Example: a schedule that halves every ``k`` steps.

    >>> class Halve(Schedule):
    ...     def __init__(self, k):
    ...         self.k, self._args = k, {"k": k}
    ...     def value(self, t):
    ...         return 0.5 ** (t // self.k)
    >>> s = Halve(2)
    >>> s, [s(t) for t in range(5)]
    (Halve(k=2), [1.0, 1.0, 0.5, 0.5, 0.25])
    >>> s(-1)
    Traceback (most recent call last):
        ...
    ValueError: ...
    """

    _args: dict[str, Any] = {}

    def __call__(self, t: int) -> float:
        return float(self.value(_check_step(t)))

    def value(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args.items())
        return f"{type(self).__name__}({args})"

    def state_dict(self) -> dict[str, Any]:
        """Pure schedules carry no state; :class:`Plateau` overrides this."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def bounds(self) -> tuple[float, float] | None:
        """The least and greatest value the schedule takes over all ``t >= 0`` (limits
        included), or None when unknown; :class:`Scheduler` checks them against the
        hyperparameter's range before the first step."""
        return None


class Constant(Schedule):
    """A constant value: ``e_t = value``.

    Example:
        >>> constant(0.1)(1000)
        0.1
    """

    def __init__(self, value: float):
        self.v = _real("value", value)
        self._args = {"value": value}

    def value(self, t):
        return self.v

    def bounds(self):
        return (self.v, self.v)


class InverseTime(Schedule):
    """1/t decay: ``e_t = e0 / (1 + k t)``.

    The notes (SNU "Optimization", how to set learning rates): t is the iteration
    number, ``e0`` and ``k`` hyperparameters. It satisfies the Robbins-Monro conditions
    (sum e_t = inf, sum e_t^2 < inf). torch has no direct equivalent (``LambdaLR``).

    Args:
        e0: the value at ``t = 0``.
        k: decay rate, >= 0.

    Example:
        >>> inverse_time(0.1, k=1.0)(9)
        0.01
    """

    def __init__(self, e0: float, k: float):
        self.e0 = _real("e0", e0)
        self.k = float(check_range("k", k, ge=0))
        self._args = {"e0": e0, "k": k}

    def value(self, t):
        return self.e0 / (1.0 + self.k * t)

    def bounds(self):
        return _toward_zero(self.e0)


class Exponential(Schedule):
    """Exponential decay: ``e_t = e0 exp(-k t)``.

    The notes (SNU "Optimization"). torch's ``ExponentialLR(gamma)`` stepped every
    iteration gives the same values with ``k = -ln(gamma)``; torch multiplies by gamma
    at each step, this evaluates the closed form (no accumulated rounding).

    Args:
        e0: the value at ``t = 0``.
        k: decay rate, >= 0.

    Example:
        >>> round(exponential(1.0, k=math.log(2))(3), 12)
        0.125
    """

    def __init__(self, e0: float, k: float):
        self.e0 = _real("e0", e0)
        self.k = float(check_range("k", k, ge=0))
        self._args = {"e0": e0, "k": k}

    def value(self, t):
        return self.e0 * math.exp(-self.k * t)

    def bounds(self):
        return _toward_zero(self.e0)


class LinearTo(Schedule):
    """Linear decay to ``e_tau`` at step ``tau``, then constant.

    The notes (CASIA lecture 6): ``e_k = (1 - a) e0 + a e_tau`` with ``a = k / tau`` for
    ``k <= tau``, and ``e_k = e_tau`` after; ``e_tau`` is typically 1% of ``e0``.
    torch's ``LinearLR(start_factor=e0/base, end_factor=e_tau/base, total_iters=tau)``
    gives the same values (as factors of a base LR, computed recursively).

    Args:
        e0: the value at ``t = 0``.
        e_tau: the value from ``t = tau`` on.
        tau: the number of steps of the decay, >= 1.

    Example:
        >>> linear_to(1.0, 0.01, tau=100)(50)
        0.505
    """

    def __init__(self, e0: float, e_tau: float, tau: int):
        self.e0 = _real("e0", e0)
        self.e_tau = _real("e_tau", e_tau)
        self.tau = check_int("tau", tau, ge=1)
        self._args = {"e0": e0, "e_tau": e_tau, "tau": tau}

    def value(self, t):
        if t >= self.tau:
            return self.e_tau
        a = t / self.tau
        return (1.0 - a) * self.e0 + a * self.e_tau

    def bounds(self):
        return (min(self.e0, self.e_tau), max(self.e0, self.e_tau))


class StepDecay(Schedule):
    """Step decay: multiply by ``gamma`` every ``step_size`` steps or at each milestone.

    ``e_t = e0 gamma^floor(t / step_size)`` or ``e_t = e0 gamma^(#milestones <= t)``
    ("reduce the learning rate by some factor every few epochs", SNU lecture).
    Same values as torch's ``StepLR`` / ``MultiStepLR``. With ``gamma > 1`` it grows
    (e.g. a batch size doubling every few epochs, see :func:`batch_size_at`).

    Args:
        e0: the value at ``t = 0``.
        gamma: the factor, > 0.
        step_size: steps between two multiplications (exclusive with ``milestones``).
        milestones: increasing steps at which to multiply.

    Example:
        >>> [step_decay(1.0, 0.5, step_size=2)(t) for t in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, e0: float, gamma: float, step_size: int | None = None,
                 milestones: Sequence[int] | None = None):
        self.e0 = _real("e0", e0)
        self.gamma = float(check_range("gamma", gamma, gt=0))
        if (step_size is None) == (milestones is None):
            fail("step_size", "given, or else `milestones`, but not both", step_size)
        self.step_size = check_int("step_size", step_size, ge=1, allow_none=True)
        if milestones is not None:
            ms = list(milestones) if not isinstance(milestones, (str, bytes)) else None
            if ms is None or not ms:
                fail("milestones", "a non-empty list of integers", milestones, TypeError)
            for m in ms:
                check_int("milestones", m, ge=1)
            if any(b <= a for a, b in zip(ms, ms[1:])):
                fail("milestones", "strictly increasing", milestones)
            milestones = ms
        self.milestones = milestones
        self._args = {"e0": e0, "gamma": gamma, "step_size": step_size, "milestones": milestones}

    def value(self, t):
        if self.step_size is not None:
            n = t // self.step_size
        else:
            n = bisect.bisect_right(self.milestones, t)
        return self.e0 * self.gamma ** n

    def bounds(self):
        if self.gamma <= 1 or self.e0 == 0:
            return _toward_zero(self.e0)
        return (self.e0, math.inf) if self.e0 > 0 else (-math.inf, self.e0)


class Warmup(Schedule):
    """Linear warmup from ``start`` to ``then(0)`` over ``steps`` steps, then ``then(t - steps)``.

    ``e_t = start + (then(0) - start) t / steps`` for ``t < steps``. Warmup is "often
    used to improve convergence" (Sun 2019; Goyal et al. 2017, "Accurate, large
    minibatch SGD"). torch's ``LinearLR(start_factor, total_iters)`` chained with
    ``SequentialLR`` does the same for a constant target.

    Args:
        then: the schedule after warmup (a schedule, a number, or a spec dict).
        steps: warmup length, >= 1.
        start: the value at ``t = 0`` (default 0.0).

    Example:
        >>> w = warmup(constant(0.1), steps=4)
        >>> [round(w(t), 3) for t in range(6)]
        [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    """

    def __init__(self, then: Any, steps: int, start: float = 0.0):
        self.then = _as_schedule("then", then)
        self.steps = check_int("steps", steps, ge=1)
        self.start = _real("start", start)
        self._args = {"then": self.then, "steps": steps, "start": start}

    def value(self, t):
        if t >= self.steps:
            return self.then(t - self.steps)
        target = self.then(0)
        return self.start + (target - self.start) * t / self.steps

    def bounds(self):
        b = self.then.bounds()
        return None if b is None else (min(self.start, b[0]), max(self.start, b[1]))


class Cyclical(Schedule):
    """Cyclical (triangular) values between ``base`` and ``peak`` (Smith 2017).

    With ``c = floor(1 + t / (2 h))`` and ``x = |t / h - 2 c + 1|`` (``h = half_cycle``):
    ``e_t = base + (peak - base) max(0, 1 - x) s``, where ``s = 1`` (``"triangular"``),
    ``1 / 2^(c-1)`` (``"triangular2"``) or ``gamma^t`` (``"exp_range"``).
    Smith, "Cyclical learning rates for training neural networks", WACV 2017.
    Same values as torch's ``CyclicLR(base_lr, max_lr, step_size_up=h)``.

    Args:
        base: the lower bound (value at ``t = 0``).
        peak: the upper bound, reached at ``t = h, 3h, ...``.
        half_cycle: steps from ``base`` to ``peak`` (>= 1).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the per-step factor of ``"exp_range"`` (0 < gamma <= 1, default 1.0).

    Example:
        >>> c = cyclical(0.0, 1.0, half_cycle=2)
        >>> [c(t) for t in range(6)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    """

    def __init__(self, base: float, peak: float, half_cycle: int, mode: str = "triangular",
                 gamma: float = 1.0):
        self.base = _real("base", base)
        self.peak = _real("peak", peak)
        self.half_cycle = check_int("half_cycle", half_cycle, ge=1)
        self.mode = check_choice("mode", mode, ["triangular", "triangular2", "exp_range"])
        self.gamma = float(check_range("gamma", gamma, gt=0, le=1))
        self._args = {"base": base, "peak": peak, "half_cycle": half_cycle, "mode": mode,
                      "gamma": gamma}

    def value(self, t):
        h = self.half_cycle
        cycle = math.floor(1 + t / (2 * h))
        x = abs(t / h - 2 * cycle + 1)
        if self.mode == "triangular":
            s = 1.0
        elif self.mode == "triangular2":
            s = 1.0 / 2.0 ** (cycle - 1)
        else:
            s = self.gamma ** t
        return self.base + (self.peak - self.base) * max(0.0, 1.0 - x) * s

    def bounds(self):
        return (min(self.base, self.peak), max(self.base, self.peak))


class Cosine(Schedule):
    """Cosine annealing from ``e0`` to ``e_min`` over ``total`` steps (Loshchilov & Hutter 2017).

    ``e_t = e_min + (e0 - e_min) (1 + cos(pi t / total)) / 2`` for ``t <= total``; after
    that ``e_min`` (or, with ``restarts=True``, the same curve again from ``e0`` every
    ``total`` steps: SGDR with ``T_mult = 1``). "SGDR: stochastic gradient descent with
    warm restarts", ICLR 2017. Differs from torch's ``CosineAnnealingLR``, which past
    ``T_max`` rises again as a cosine of period ``2 T_max``; with ``restarts=True`` it
    matches ``CosineAnnealingWarmRestarts(T_0=total)``.

    Args:
        e0: the value at ``t = 0``.
        total: annealing length, >= 1.
        e_min: the final value (default 0).
        restarts: restart from ``e0`` every ``total`` steps (default False).

    Example:
        >>> cosine(1.0, total=4)(2)
        0.5
    """

    def __init__(self, e0: float, total: int, e_min: float = 0.0, restarts: bool = False):
        self.e0 = _real("e0", e0)
        self.total = check_int("total", total, ge=1)
        self.e_min = _real("e_min", e_min)
        self.restarts = check_bool("restarts", restarts)
        self._args = {"e0": e0, "total": total, "e_min": e_min, "restarts": restarts}

    def value(self, t):
        if self.restarts:
            t = t % self.total
        elif t >= self.total:
            return self.e_min
        return self.e_min + (self.e0 - self.e_min) * (1.0 + math.cos(math.pi * t / self.total)) / 2.0

    def bounds(self):
        return (min(self.e0, self.e_min), max(self.e0, self.e_min))


class Join(Schedule):
    """Run ``schedules[i]`` on ``[boundaries[i-1], boundaries[i])``, restarting its clock.

    ``e_t = schedules[i](t - boundaries[i-1])`` with ``boundaries[-1] = 0`` (like optax's
    ``join_schedules`` and torch's ``SequentialLR`` with milestones).

    Args:
        schedules: n schedules (or numbers, or spec dicts), n >= 1.
        boundaries: n - 1 strictly increasing steps >= 1.

    Example:
        >>> j = join([constant(1.0), linear_to(1.0, 0.0, tau=2)], boundaries=[3])
        >>> [j(t) for t in range(6)]
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, schedules: Sequence[Any], boundaries: Sequence[int]):
        if isinstance(schedules, (str, bytes, Mapping)) or not isinstance(schedules, Sequence) \
                or not schedules:
            fail("schedules", "a non-empty list of schedules", schedules, TypeError)
        self.schedules = [_as_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules)]
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
            fail("boundaries", "a list of integers", boundaries, TypeError)
        bounds = list(boundaries)
        if len(bounds) != len(self.schedules) - 1:
            fail("boundaries", f"a list of len(schedules) - 1 = {len(self.schedules) - 1} steps",
                 boundaries)
        for b in bounds:
            check_int("boundaries", b, ge=1)
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            fail("boundaries", "strictly increasing", boundaries)
        self.boundaries = bounds
        self._args = {"schedules": self.schedules, "boundaries": bounds}

    def value(self, t):
        i = bisect.bisect_right(self.boundaries, t)
        offset = self.boundaries[i - 1] if i > 0 else 0
        return self.schedules[i](t - offset)

    def bounds(self):
        bs = [s.bounds() for s in self.schedules]
        if any(b is None for b in bs):
            return None
        return (min(b[0] for b in bs), max(b[1] for b in bs))


def sequence(schedules: Sequence[Any], steps: Sequence[int]) -> Join:
    """Run schedules one after another, each for its number of ``steps`` (the last forever).

    ``sequence([a, b, c], steps=[n1, n2])`` is ``join([a, b, c], boundaries=[n1, n1 + n2])``.

    Example:
        >>> s = sequence([0.5, 0.9], steps=[2])
        >>> [s(t) for t in range(4)]
        [0.5, 0.5, 0.9, 0.9]
    """
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        fail("steps", "a list of integers", steps, TypeError)
    bounds, total = [], 0
    for n in steps:
        check_int("steps", n, ge=1)
        total += n
        bounds.append(total)
    return Join(schedules, bounds)


def momentum_ramp(start: float = 0.5, end: float = 0.9, steps: int = 1000,
                  mode: str = "linear") -> Schedule:
    """Momentum schedule of "Practical Aspects": 0.5 while learning stabilizes, then 0.9.

    ``mode="linear"``: ``linear_to(start, end, tau=steps)``; ``mode="step"``: ``start``
    for the first ``steps`` steps, then ``end`` (the notes' switch). Apply it with
    :class:`Scheduler` under the key ``"momentum"`` (``betas[0]`` for Adam-like groups).

    Args:
        start: initial momentum in [0, 1) (default 0.5).
        end: final momentum in [0, 1) (default 0.9).
        steps: ramp length or switch step, >= 1 (default 1000).
        mode: ``"linear"`` or ``"step"``.

    Example:
        >>> m = momentum_ramp(steps=4)
        >>> [round(m(t), 2) for t in (0, 2, 4, 9)]
        [0.5, 0.7, 0.9, 0.9]
    """
    check_range("start", start, ge=0, lt=1)
    check_range("end", end, ge=0, lt=1)
    check_int("steps", steps, ge=1)
    check_choice("mode", mode, ["linear", "step"])
    if mode == "linear":
        return LinearTo(start, end, steps)
    return Join([Constant(start), Constant(end)], [steps])


class Plateau(Schedule, MonitorCallback):
    """Reduce on plateau: multiply by ``factor`` when a metric stops improving.

    Stateful and metric-driven: call :meth:`step` with the metric once per epoch (or
    use it as a callback: ``on_epoch_end`` reads ``logs[monitor]``); ``sched(t)``
    returns the current value whatever ``t``. An epoch improves when
    ``m < best - min_delta`` (``delta_mode="abs"``, the project's monitor rule) or
    ``m < best (1 - min_delta)`` (``delta_mode="rel"``, torch's default); mirrored for
    ``mode="max"``. After more than ``patience`` epochs without improvement,
    ``e <- max(e factor, min_value)`` (skipped when the change is below 1e-8, as torch
    does), then ``cooldown`` epochs are not counted. Same rule as torch's
    ``ReduceLROnPlateau(threshold=min_delta, threshold_mode=delta_mode, eps=1e-8)``.

    Args:
        e0: the initial value.
        factor: multiplier in (0, 1) (default 0.1).
        patience: bad epochs tolerated before reducing (default 10).
        min_delta: improvement threshold, >= 0 (default 0.0).
        cooldown: epochs to wait after a reduction (default 0).
        min_value: lower bound, >= 0 (default 0.0).
        mode: ``"min"`` or ``"max"``.
        delta_mode: ``"abs"`` (default) or ``"rel"``.
        monitor: log key read by ``on_epoch_end`` (default ``"val_loss"``).

    Example:
        >>> p = plateau(1.0, factor=0.5, patience=1)
        >>> [p.step(m) for m in (3.0, 2.0, 2.0, 2.0, 2.0)]
        [1.0, 1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, e0: float, factor: float = 0.1, patience: int = 10, min_delta: float = 0.0,
                 cooldown: int = 0, min_value: float = 0.0, mode: str = "min",
                 delta_mode: str = "abs", monitor: str = "val_loss"):
        self.e0 = _real("e0", e0)
        self.factor = float(check_range("factor", factor, gt=0, lt=1))
        self.cooldown = check_int("cooldown", cooldown, ge=0)
        self.min_value = float(check_range("min_value", min_value, ge=0))
        self.delta_mode = check_choice("delta_mode", delta_mode, ["abs", "rel"])
        MonitorCallback.__init__(self, monitor=monitor, mode=mode, min_delta=min_delta,
                                 patience=patience)
        self._args = {"e0": e0, "factor": factor, "patience": patience, "min_delta": min_delta,
                      "cooldown": cooldown, "min_value": min_value, "mode": mode,
                      "delta_mode": delta_mode, "monitor": monitor}

    def reset(self) -> None:
        MonitorCallback.reset(self)
        self.current = self.e0
        self.cooldown_counter = 0
        self.epochs = 0

    def is_improvement(self, value: float) -> bool:
        if self.delta_mode == "abs":
            return MonitorCallback.is_improvement(self, value)
        if self.mode == "min":
            return value < self.best * (1.0 - self.min_delta)
        return value > self.best * (1.0 + self.min_delta)

    def step(self, metric: float) -> float:
        """Record one epoch's metric; return the (possibly reduced) value."""
        if not (isinstance(metric, float) and math.isnan(metric)):  # NaN counts as a bad epoch
            metric = _real("metric", metric)
        self.update(metric, epoch=self.epochs)
        self.epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.wait > self.patience:
            new = max(self.current * self.factor, self.min_value)
            if self.current - new > 1e-8:
                self.current = new
            self.cooldown_counter = self.cooldown
            self.wait = 0
        return self.current

    def value(self, t):
        return self.current

    def bounds(self):
        return (min(self.e0, self.min_value), max(self.e0, self.min_value))

    def on_epoch_end(self, trainer, logs) -> None:
        self.step(self.value_from(logs))

    def state_dict(self) -> dict[str, Any]:
        state = MonitorCallback.state_dict(self)
        state.update(current=self.current, cooldown_counter=self.cooldown_counter,
                     epochs=self.epochs)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        MonitorCallback.load_state_dict(self, state)
        self.current = state["current"]
        self.cooldown_counter = state["cooldown_counter"]
        self.epochs = state["epochs"]


# Factories: schedules are nouns (the naming grammar); the classes carry the docs.
constant = Constant
inverse_time = InverseTime
exponential = Exponential
linear_to = LinearTo
step_decay = StepDecay
warmup = Warmup
cyclical = Cyclical
cosine = Cosine
join = Join
plateau = Plateau


def triangular(base: float, peak: float, half_cycle: int, mode: str = "triangular",
               gamma: float = 1.0) -> Cyclical:
    """Triangular cyclical schedule (Smith 2017); the same as :func:`cyclical`.

    Example:
        >>> triangular(0.1, 0.5, half_cycle=10)(10)
        0.5
    """
    return Cyclical(base, peak, half_cycle, mode=mode, gamma=gamma)


for _name, _f in [("constant", Constant), ("inverse_time", InverseTime),
                  ("exponential", Exponential), ("linear_to", LinearTo),
                  ("step_decay", StepDecay), ("warmup", Warmup), ("cyclical", Cyclical),
                  ("triangular", triangular), ("cosine", Cosine), ("join", Join),
                  ("sequence", sequence), ("momentum_ramp", momentum_ramp),
                  ("plateau", Plateau)]:
    SCHEDULES.register(_name, _f)


def create(spec: Any) -> Schedule:
    """A schedule from a spec: a schedule, a number (constant) or ``{"name": ..., **kwargs}``.

    Nested schedules (``then``, ``schedules``) may themselves be specs, so a recipe can
    write ``{"name": "warmup", "steps": 100, "then": {"name": "cosine", "e0": 0.1,
    "total": 900}}``.

    Example:
        >>> create({"name": "inverse_time", "e0": 0.1, "k": 1.0})(1)
        0.05
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, Mapping):
        if "name" not in spec:
            fail("spec", "a mapping with a 'name' key", dict(spec))
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        try:
            return SCHEDULES.create(spec["name"], **kwargs)
        except TypeError as e:
            if "unexpected keyword" in str(e) or "required positional" in str(e):
                raise TypeError(f"schedule {spec['name']!r}: {e}. Received: {dict(spec)!r}") from None
            raise
    return _as_schedule("spec", spec)


def batch_size_at(schedule: Callable[[int], float], epoch: int) -> int:
    """The batch size for ``epoch``: ``round(schedule(epoch))``, checked to be >= 1.

    Growing the batch size as training proceeds controls SGD's noise like a decaying
    learning rate ("Practical Aspects"; Smith et al. 2018, "Don't decay the learning
    rate, increase the batch size").

    Example:
        >>> grow = step_decay(32, gamma=2, step_size=5)
        >>> [batch_size_at(grow, e) for e in (0, 5, 12)]
        [32, 64, 128]
    """
    if not callable(schedule):
        fail("schedule", "a callable t -> value", schedule, TypeError)
    epoch = _check_step(epoch)
    value = float(schedule(epoch))
    if not math.isfinite(value) or round(value) < 1:
        fail("batch_size", "an integer >= 1", value)
    return int(round(value))


class Scheduler:
    """Apply schedules to the hyperparameters of any ``torch.optim.Optimizer``.

    At construction the values for ``t = 0`` are set; each :meth:`step` advances ``t``
    and sets every param group's hyperparameter ``key`` to ``schedules[key](t)``
    (``scale="absolute"``) or to ``initial * schedules[key](t)`` (``scale="relative"``,
    the initial value is the group's value at construction, so per-group LRs keep their
    ratios, like torch's ``LambdaLR``). The key ``"momentum"`` sets ``betas[0]`` in groups
    that have ``betas`` and no ``momentum`` (as torch's ``OneCycleLR`` does). Tensor
    hyperparameters are updated in place.

    Args:
        optimizer: any optimizer with ``param_groups``.
        schedules: mapping hyperparameter name -> schedule (or number / spec dict).
        unit: ``"step"`` (call :meth:`step` after every optimizer step) or ``"epoch"``;
            a label the trainer reads, it does not change the arithmetic.
        scale: ``"absolute"`` or ``"relative"``.

    Example:
        >>> import torch
        >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
        >>> sch = Scheduler(opt, {"lr": exponential(1e-3, k=0.0), "momentum": 0.8})
        >>> opt.param_groups[0]["betas"]
        (0.8, 0.999)
    """

    def __init__(self, optimizer, schedules: Mapping[str, Any], *, unit: str = "step",
                 scale: str = "absolute"):
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            fail("optimizer", "an optimizer with param_groups", optimizer, TypeError)
        if not isinstance(schedules, Mapping) or not schedules:
            fail("schedules", "a non-empty mapping of hyperparameter name -> schedule",
                 schedules, TypeError)
        self.optimizer = optimizer
        self.unit = check_choice("unit", unit, ["step", "epoch"])
        self.scale = check_choice("scale", scale, ["absolute", "relative"])
        self.schedules: dict[str, Schedule] = {}
        for key, s in schedules.items():
            if not isinstance(key, str):
                fail("schedules", "keyed by hyperparameter names (str)", key, TypeError)
            for i, g in enumerate(groups):
                if self._slot(g, key) is None:
                    have = ", ".join(sorted(k for k in g if k != "params"))
                    raise ValueError(
                        f"`schedules` names a hyperparameter that param group {i} lacks "
                        f"(it has: {have}). Received: schedules key {key!r}")
            self.schedules[key] = s if callable(s) and not isinstance(s, Mapping) \
                else _as_schedule(f"schedules[{key!r}]", s)
        self.initial = [{k: self._get(g, k) for k in self.schedules} for g in groups]
        self._check_bounds()
        self.t = 0
        self.last_values: dict[str, list[float]] = {}
        self._apply()

    def _check_bounds(self) -> None:
        """Refuse a schedule whose values leave the hyperparameter's range (``lr < 0``, a
        momentum above 1, ...) at some step, before the first step is taken."""
        for key, s in self.schedules.items():
            b = s.bounds() if isinstance(s, Schedule) else None
            if b is None or key not in HYPER_RANGES:
                continue
            for init in self.initial:
                lo, hi = (b[0] * init[key], b[1] * init[key]) if self.scale == "relative" else b
                lo, hi = min(lo, hi), max(lo, hi)
                r = HYPER_RANGES[key]
                bad = lo if lo < r.get("ge", -math.inf) else hi if hi > r.get("le", math.inf) else None
                if bad is not None:
                    raise ValueError(f"`{key}` must be {_range_text(key)} at every step. Received: "
                                     f"{key}={s!r}, which reaches {bad:g}")

    @staticmethod
    def _slot(group: dict, key: str):
        if key in group:
            return key
        if key == "momentum" and "betas" in group:
            return "betas"
        return None

    def _get(self, group: dict, key: str) -> float:
        slot = self._slot(group, key)
        v = group[slot][0] if slot == "betas" else group[slot]
        return float(v.item()) if hasattr(v, "item") else float(v)

    def _set(self, group: dict, key: str, value: float) -> None:
        slot = self._slot(group, key)
        if slot == "betas":
            b = group["betas"]
            if hasattr(b[0], "fill_"):
                b[0].fill_(value)
            else:
                group["betas"] = (value, *tuple(b)[1:])
        elif hasattr(group[slot], "fill_"):
            group[slot].fill_(value)
        else:
            group[slot] = value

    def _apply(self) -> None:
        self.last_values = {}
        for key, s in self.schedules.items():
            v = float(s(self.t))
            if not math.isfinite(v):
                raise ValueError(f"schedule for `{key}` gave a non-finite value at t={self.t}. "
                                 f"Received: {key}={v!r}")
            vals = []
            for g, init in zip(self.optimizer.param_groups, self.initial):
                gv = init[key] * v if self.scale == "relative" else v
                if not _in_range(key, gv):
                    raise ValueError(f"`{key}` must be {_range_text(key) or 'finite'}. Received: "
                                     f"{key}={gv!r} (the schedule's value at t={self.t})")
                self._set(g, key, gv)
                vals.append(gv)
            self.last_values[key] = vals

    def step(self) -> None:
        """Advance one step (or epoch) and set the scheduled hyperparameters."""
        self.t += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "initial": [dict(d) for d in self.initial],
                "last_values": {k: list(v) for k, v in self.last_values.items()},
                "schedules": {k: s.state_dict() for k, s in self.schedules.items()
                              if hasattr(s, "state_dict")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the step count, the initial values and each stateful
        schedule's state, e.g. a :class:`Plateau`'s).

        The optimizer is not touched, as with torch's LR schedulers: its own
        ``load_state_dict`` restores the values the schedules had set. (Re-applying
        ``schedule(t)`` here would overwrite them, e.g. with a plateau value decided at
        the end of an epoch that the uninterrupted run applies only at the next step.)
        """
        if not isinstance(state, Mapping) or "t" not in state or "initial" not in state:
            fail("state", "a Scheduler.state_dict()", state)
        if len(state["initial"]) != len(self.optimizer.param_groups):
            fail("state", f"a state of {len(self.optimizer.param_groups)} param groups",
                 f"{len(state['initial'])} groups")
        for k, st in state.get("schedules", {}).items():
            if k in self.schedules and hasattr(self.schedules[k], "load_state_dict"):
                self.schedules[k].load_state_dict(st)
        self.t = _check_step(state["t"])
        self.initial = [dict(d) for d in state["initial"]]
        self.last_values = {k: list(v) for k, v in state.get("last_values", {}).items()}

    def __repr__(self) -> str:
        return (f"Scheduler(t={self.t}, unit={self.unit!r}, scale={self.scale!r}, "
                f"schedules={self.schedules!r})")



class LRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """A descend schedule as a torch LR scheduler, for Lightning, Hugging Face and any loop.

    A subclass of ``torch.optim.lr_scheduler.LRScheduler``: at construction
    (``last_epoch=-1``) it sets the values for ``t = 0``, and each :meth:`step` advances
    ``t = last_epoch`` by one and sets every param group ``g``'s learning rate to::

        lr_g = s_g * schedule(t)              (scale="absolute", the default)
        lr_g = s_g * base_lr_g * schedule(t)  (scale="relative": a factor, like LambdaLR)

    where ``base_lr_g`` is the group's ``initial_lr`` (its ``lr`` at construction) and
    ``s_g`` the group's scale: ``g[scale_key]`` (default ``"lr_scale"``, the key of
    timm's layer-wise decay groups; 1 when absent), times
    ``layer_decay ** (L - g["layer_id"])`` when ``layer_decay`` is given (``L`` the
    largest ``layer_id`` of the groups, so the last layer keeps the full rate; groups
    without ``layer_id`` are not decayed). The schedule is evaluated in closed form at
    ``t``; nothing accumulates from step to step, so a resumed run gives the same values.

    ``state_dict()`` is plain data (numbers, lists, the state of a ``plateau``
    schedule) that loads under ``torch.load(weights_only=True)``; the schedule objects are
    not in it (build the scheduler again, then ``load_state_dict``), as for torch's
    ``LambdaLR``.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (``descend.optim`` or ``torch.optim``).
        schedule: a schedule (or a number, a spec dict, any callable ``t -> float``), or a
            list of them, one per param group.
        scale: ``"absolute"`` (default) or ``"relative"``.
        scale_key: the per-group scale key (default ``"lr_scale"``; None: no scale key).
        layer_decay: the layer-wise decay factor in (0, 1] applied by ``layer_id``
            (default None: off).
        last_epoch: torch's resume argument (default -1: a new run).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([{"params": [w], "lr_scale": 0.5}], lr=1.0)
        >>> sch = LRScheduler(opt, cosine(0.1, total=4))
        >>> for _ in range(2):
        ...     opt.step(); sch.step()
        >>> round(opt.param_groups[0]["lr"], 6), sch.last_epoch   # 0.5 * cosine(t=2)
        (0.025, 2)
        >>> import io
        >>> buf = io.BytesIO(); torch.save(sch.state_dict(), buf); _ = buf.seek(0)
        >>> torch.load(buf, weights_only=True)["last_epoch"]
        2

    Differs from torch's ``LambdaLR``: the default is absolute values (the schedule gives
    the learning rate, not a factor), the state dict holds no function (``LambdaLR``
    pickles a callable object into it, which ``weights_only`` loading refuses), and the
    per-group ``lr_scale`` / ``layer_id`` keys are read as timm's schedulers do.
    """

    def __init__(self, optimizer, schedule: Any, *, scale: str = "absolute",
                 scale_key: str | None = "lr_scale", layer_decay: float | None = None,
                 last_epoch: int = -1):
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            fail("optimizer", "an optimizer with param_groups", optimizer, TypeError)
        if isinstance(schedule, (list, tuple)):
            if len(schedule) != len(groups):
                fail("schedule", f"one schedule, or a list of {len(groups)} (one per param "
                     "group)", f"a list of {len(schedule)}")
            items = list(schedule)
        else:
            items = [schedule] * len(groups)
        self.schedules = [s if callable(s) and not isinstance(s, Mapping)
                          else _as_schedule("schedule", s) for s in items]
        self.scale = check_choice("scale", scale, ["absolute", "relative"])
        if scale_key is not None and not isinstance(scale_key, str):
            fail("scale_key", "a param-group key (str) or None", scale_key, TypeError)
        self.scale_key = scale_key
        self.layer_decay = None if layer_decay is None else float(
            check_range("layer_decay", layer_decay, gt=0, le=1))
        check_int("last_epoch", last_epoch, ge=-1)
        super().__init__(optimizer, last_epoch)

    def group_scales(self) -> list[float]:
        """``s_g`` of every param group (``lr_scale`` times the layer decay)."""
        groups = self.optimizer.param_groups
        scales = []
        for i, g in enumerate(groups):
            s = 1.0
            if self.scale_key is not None and self.scale_key in g:
                s = float(check_range(f"param_groups[{i}][{self.scale_key!r}]",
                                      g[self.scale_key], ge=0))
            scales.append(s)
        if self.layer_decay is not None:
            ids = {i: check_int(f"param_groups[{i}]['layer_id']", g["layer_id"], ge=0)
                   for i, g in enumerate(groups) if "layer_id" in g}
            top = max(ids.values(), default=0)
            for i, lid in ids.items():
                scales[i] *= self.layer_decay ** (top - lid)
        return scales

    def _values(self) -> list[float]:
        t = max(self.last_epoch, 0)
        out = []
        for s, base, g_scale in zip(self.schedules, self.base_lrs, self.group_scales()):
            v = float(s(t))
            if not math.isfinite(v):
                raise ValueError(f"the lr schedule gave a non-finite value at t={t}. "
                                 f"Received: lr={v!r}")
            base = float(base.item()) if hasattr(base, "item") else float(base)
            out.append(g_scale * (base * v if self.scale == "relative" else v))
        return out

    def get_lr(self) -> list[float]:
        """The learning rates for ``t = last_epoch`` (torch calls this in :meth:`step`)."""
        return self._values()

    def _get_closed_form_lr(self) -> list[float]:
        return self._values()

    def state_dict(self) -> dict[str, Any]:
        """torch's state (``last_epoch``, ``base_lrs``, ...) without the schedule objects,
        plus the state of stateful schedules (``plateau``): plain data."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}
        state["schedule_states"] = [s.state_dict() if hasattr(s, "state_dict") else {}
                                    for s in self.schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the schedules themselves come from the constructor)."""
        state = dict(state_dict)
        for s, st in zip(self.schedules, state.pop("schedule_states", [])):
            if st and hasattr(s, "load_state_dict"):
                s.load_state_dict(st)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        sched = self.schedules[0] if all(s is self.schedules[0] for s in self.schedules) \
            else self.schedules
        return (f"LRScheduler(last_epoch={self.last_epoch}, scale={self.scale!r}, "
                f"schedule={sched!r})")


__all__ = [
    "SCHEDULES", "Schedule", "Constant", "InverseTime", "Exponential", "LinearTo", "StepDecay",
    "Warmup", "Cyclical", "Cosine", "Join", "Plateau", "Scheduler", "constant", "inverse_time",
    "exponential", "linear_to", "step_decay", "warmup", "cyclical", "triangular", "cosine",
    "join", "sequence", "momentum_ramp", "plateau", "create", "batch_size_at", "HYPER_RANGES",
]
__all__ += ["LRScheduler"]
