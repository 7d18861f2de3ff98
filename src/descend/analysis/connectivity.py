"""Mode connectivity: a quadratic Bezier curve of low loss between two minima.

Two independently trained networks ``w_1``, ``w_2`` are joined by

    phi_theta(t) = (1 - t)^2 w_1 + 2 t (1 - t) theta + t^2 w_2,    t in [0, 1],

and the bend ``theta`` is trained to minimize ``E_{t ~ U(0,1)} L(phi_theta(t))`` with
``w_1``, ``w_2`` fixed (Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs", 2018; Draxler et al., 2018). The straight line is the case
``theta = (w_1 + w_2) / 2``. The *barrier* of a path is the largest excess of its loss
over the linear interpolation of the end losses,

    barrier = max_t [ L(t) - ((1 - t) L(0) + t L(1)) ],

so 0 means "no hill between the two solutions" (Frankle et al., 2020).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import functional_call

from descend._validation import check_int, check_range
from descend.analysis.landscape import evaluate, get_vector, set_vector


class BezierCurve:
    """Quadratic Bezier curve ``phi(t)`` between two flat weight vectors.

    Args:
        start: ``w_1`` (model, state dict or flat vector; a state dict needs ``like``).
        end: ``w_2``.
        bend: ``theta`` (default: the midpoint, i.e. the straight line).
        like: the model, when weights are given as state dicts.

    Example:
        >>> c = BezierCurve(torch.zeros(2), torch.ones(2), bend=torch.tensor([2.0, 0.0]))
        >>> c.point(0.5)
        tensor([1.2500, 0.2500])
    """

    def __init__(self, start, end, bend=None, *, like=None):
        self.start = get_vector(start, like)
        self.end = get_vector(end, like)
        if self.start.shape != self.end.shape:
            raise ValueError(f"`end` must have as many parameters as `start`. "
                             f"Received: {self.end.numel()} vs {self.start.numel()}")
        mid = (self.start + self.end) / 2
        self.bend = (mid if bend is None else get_vector(bend, like)).clone()

    @staticmethod
    def coefficients(t: float) -> tuple[float, float, float]:
        """Bernstein weights ``((1 - t)^2, 2 t (1 - t), t^2)``."""
        return (1 - t) ** 2, 2 * t * (1 - t), t**2

    def point(self, t: float, bend: torch.Tensor | None = None) -> torch.Tensor:
        a, b, c = self.coefficients(float(t))
        theta = self.bend if bend is None else bend
        return a * self.start + b * theta + c * self.end


def _unflatten(model: torch.nn.Module, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = vec[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def train_bezier(model: torch.nn.Module, loss_fn: Callable, data, start, end, *,
                 steps: int = 500, lr: float = 0.01, batch_size: int = 128,
                 seed: int = 0) -> BezierCurve:
    """Train the bend ``theta`` of a :class:`BezierCurve` between ``start`` and ``end``.

    Each step draws ``t ~ U(0, 1)`` and a minibatch, and takes an Adam step on
    ``L(phi_theta(t))`` w.r.t. ``theta`` only (the end points stay fixed).

    Args:
        model: the architecture (its own weights are not changed).
        loss_fn: ``loss_fn(outputs, y)``.
        data: ``(x, y)`` training tensors.
        start, end: the two solutions.
        steps: optimizer steps (default 500).
        lr: Adam learning rate (default 0.01).
        batch_size: minibatch size (default 128).
        seed: seed for ``t`` and the minibatches.

    Example:
        >>> m = torch.nn.Linear(1, 1, bias=False)
        >>> data = (torch.ones(8, 1), torch.ones(8, 1))
        >>> c = train_bezier(m, torch.nn.functional.mse_loss, data, torch.tensor([1.0]),
        ...                  torch.tensor([1.0]), steps=5)
        >>> c.point(0.0).tolist(), c.point(1.0).tolist()
        ([1.0], [1.0])
    """
    check_int("steps", steps, ge=0)
    check_range("lr", lr, gt=0)
    check_int("batch_size", batch_size, ge=1)
    x, y = data
    curve = BezierCurve(start, end, like=model)
    theta = curve.bend.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.train()
    n = len(x)
    for _ in range(steps):
        t = float(torch.rand((), generator=gen))
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        params = _unflatten(model, curve.point(t, theta))
        loss = loss_fn(functional_call(model, params, (x[idx],)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train(was)
    curve.bend = theta.detach().clone()
    return curve


def barrier(losses: torch.Tensor) -> float:
    """``max_t [L(t) - ((1 - t) L(0) + t L(1))]`` for losses on an even grid of ``t``.

    Example:
        >>> barrier(torch.tensor([1.0, 3.0, 1.0]))
        2.0
    """
    losses = torch.as_tensor(losses, dtype=torch.float64)
    t = torch.linspace(0, 1, len(losses), dtype=torch.float64)
    return float((losses - ((1 - t) * losses[0] + t * losses[-1])).max())


def path_losses(model: torch.nn.Module, loss_fn: Callable, data, curve: BezierCurve, *,
                points: int = 21) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Losses along the curve and along the straight line between its end points.

    Returns:
        ``(ts, line_losses, curve_losses)``.

    Example: one weight ``w`` with loss ``w^2``, between ``w = -1`` and ``w = 1``.

    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> data = (torch.ones(1, 1), torch.zeros(1, 1))
    >>> curve = BezierCurve(torch.tensor([-1.0]), torch.tensor([1.0]), bend=torch.tensor([1.0]))
    >>> ts, line, bent = path_losses(model, torch.nn.functional.mse_loss, data, curve, points=3)
    >>> ts.tolist(), line.tolist(), bent.tolist()      # the curve passes w = 0.5 at t = 0.5
    ([0.0, 0.5, 1.0], [1.0, 0.0, 1.0], [1.0, 0.25, 1.0])
    """
    check_int("points", points, ge=2)
    saved = get_vector(model)
    ts = torch.linspace(0, 1, points, dtype=torch.float64)
    line, bent = [], []
    try:
        for t in ts:
            set_vector(model, (1 - t) * curve.start + t * curve.end)
            line.append(evaluate(model, loss_fn, data))
            set_vector(model, curve.point(float(t)))
            bent.append(evaluate(model, loss_fn, data))
    finally:
        set_vector(model, saved)
    return ts, torch.tensor(line, dtype=torch.float64), torch.tensor(bent, dtype=torch.float64)


__all__ = ["BezierCurve", "train_bezier", "barrier", "path_losses"]
