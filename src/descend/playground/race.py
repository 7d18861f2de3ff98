"""The optimizer race: trajectories of real optimizers on a 2-D surface, and its contours.

Each runner (any registry optimizer but the layer-wise ones, ``descend.optim.LAYERWISE``)
starts at the same point ``w0 = (x0, y0)`` (a float64 leaf tensor), and for
``k = 0..steps-1`` calls ``optimizer.step(closure)`` where the closure computes
``f(w)`` and its gradient by autograd, then steps the schedule; the positions
``w_0..w_K``, the losses ``f(w_k)``, the learning rate used at each step and the
distance ``min_j ||w_k - m_j||`` to the nearest known minimum are returned.

A run stops cleanly at the first non-finite loss or position, or when ``||w||``
exceeds ``1e6``: the points so far are kept and ``stopped`` says why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from descend._validation import check_choice
from descend.playground import library

DIVERGE_NORM = 1e6


def grid(fn, bounds, n: int = 90) -> dict[str, Any]:
    """``f`` on an ``n x n`` grid over ``bounds`` plus contour lines, for drawing.

    Contour levels are spaced evenly in ``log(f - min f + 1e-3)`` (so deep narrow
    valleys show), lines traced by contourpy (matplotlib's contour engine).
    """
    xmin, xmax, ymin, ymax = bounds
    xs = torch.linspace(xmin, xmax, n, dtype=torch.float64)
    ys = torch.linspace(ymin, ymax, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        z = fn(xx, yy).to(torch.float64)
    z = torch.broadcast_to(z, xx.shape).clone()
    finite = torch.isfinite(z)
    if not finite.any():
        raise ValueError(f"`expression` must be finite somewhere on the drawn box. "
                         f"Received: bounds={list(bounds)}")
    lo = float(z[finite].min())
    hi = float(z[finite].max())
    z = torch.where(finite, z, torch.tensor(hi, dtype=torch.float64))
    shade = torch.log(z - lo + 1e-3)
    lines = []
    try:
        import contourpy

        gen = contourpy.contour_generator(xs.numpy(), ys.numpy(), shade.numpy())
        s_lo, s_hi = float(shade.min()), float(shade.max())
        for level in np.linspace(s_lo, s_hi, 22)[1:-1]:
            paths = [np.round(p, 5).tolist() for p in gen.lines(level) if len(p) > 1]
            lines.append({"level": float(math.exp(level) + lo - 1e-3), "paths": paths})
    except ImportError:  # pragma: no cover - contourpy comes with matplotlib
        pass
    return {"n": n, "bounds": list(bounds), "min": lo, "max": hi,
            "shade": [round(v, 5) for v in shade.flatten().tolist()], "contours": lines}


def _finite_or_none(v: float):
    return v if math.isfinite(v) else None


def run(fn, start, minima, name: str, hyper: dict[str, Any], steps: int,
        schedule: str = "none", schedule_hyper: dict[str, Any] | None = None) -> dict:
    """Run one optimizer for ``steps`` steps from ``start`` on ``fn``.

    Example:
        >>> from descend.analysis.testfunctions import TEST_FUNCTIONS
        >>> s = TEST_FUNCTIONS.create("quadratic")
        >>> r = run(s.fn, (1.0, 1.0), s.minima, "sgd", {"lr": 0.1}, 3)
        >>> r["x"][:2]
        [1.0, 0.9]
    """
    check_choice("optimizer", name, library.race_optimizer_names())
    w = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64, requires_grad=True)
    opt = library.create_optimizer(name, [w], dict(hyper))
    sched = library.attach_schedule(opt, schedule, dict(schedule_hyper or {}))

    def closure():
        opt.zero_grad()
        loss = fn(w[0], w[1])
        loss.backward()
        return loss

    def value() -> float:
        with torch.no_grad():
            return float(fn(w[0], w[1]))

    xs, ys, losses, lrs = [float(w[0].detach())], [float(w[1].detach())], [value()], []
    stopped = None
    if not math.isfinite(losses[0]):
        stopped = "the loss is not finite at the start point"
    for k in range(steps if stopped is None else 0):
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step(closure)
        if sched is not None:
            sched.step()
        px, py, loss = float(w[0].detach()), float(w[1].detach()), value()
        if not (math.isfinite(px) and math.isfinite(py)) or math.hypot(px, py) > DIVERGE_NORM:
            stopped = f"diverged at step {k + 1}: |w| = {math.hypot(px, py):.3g}"
            break
        xs.append(px)
        ys.append(py)
        losses.append(loss)
        if not math.isfinite(loss):
            stopped = f"diverged at step {k + 1}: the loss is {loss}"
            break
    dist = None
    if minima:
        dist = [min(math.hypot(x - mx, y - my) for mx, my in minima) for x, y in zip(xs, ys)]
    return {"name": name, "x": xs, "y": ys, "loss": [_finite_or_none(v) for v in losses],
            "lr": lrs, "distance": dist, "stopped": stopped}
