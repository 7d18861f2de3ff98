"""Optimizer trajectories on the 2-D test functions, drawn over their contours.

:func:`run_trajectory` runs one optimizer from a start point and records every iterate;
:func:`race` runs several; :func:`plot_trajectories` draws them over log-spaced contours
(PNG) and :func:`animate_trajectories` writes the same race as a GIF (matplotlib's
``PillowWriter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from descend._extras import require
from descend._validation import check_int, check_range, fail
from descend.analysis.testfunctions import TEST_FUNCTIONS, TestFunction

# Learning rates that give a readable race on every test function (GD-like methods need
# small steps on Rosenbrock/Beale; sign-like adaptive methods move ~lr per step).
DEFAULT_LR = {"adagrad": 0.3, "adadelta": 1.0, "rmsprop": 0.01, "rmsprop_nesterov": 0.005, "adam": 0.05, "adamw": 0.05,
              "adamax": 0.05, "nadam": 0.05, "radam": 0.05, "lbfgs": 0.5,
              # second-order steps are scaled by the curvature: lr 1 is the full step
              "newton": 1.0, "newton_saddle_free": 1.0, "cg": 1.0, "bfgs": 1.0}
DEFAULT_GD_LR = {"quadratic": 0.04, "rosenbrock": 5e-4, "beale": 5e-3, "saddle": 0.05,
                 "himmelblau": 5e-3}


def _resolve_function(function) -> TestFunction:
    if isinstance(function, TestFunction):
        return function
    if isinstance(function, str):
        return TEST_FUNCTIONS.create(function)
    fail("function", "a test-function name or a TestFunction", function, TypeError)


def _make_optimizer(optimizer, params, lr, kwargs):
    if isinstance(optimizer, str):
        from descend import optim as dopt  # the library's registry

        return dopt.create(optimizer, params, lr=lr, **kwargs)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr, **kwargs)
    if callable(optimizer):
        return optimizer(params, lr=lr, **kwargs)
    fail("optimizer", "a registered name, a torch.optim.Optimizer class or a factory", optimizer,
         TypeError)


def default_lr(optimizer, function: str) -> float:
    """A learning rate that gives a readable trajectory (see ``DEFAULT_LR``).

    >>> default_lr("adam", "rosenbrock"), default_lr("sgd", "rosenbrock"), default_lr("sgd_momentum", "quadratic")
    (0.05, 0.0005, 0.008)
    """
    name = optimizer if isinstance(optimizer, str) else getattr(optimizer, "__name__", "")
    name = name.lower()
    if name in DEFAULT_LR:
        return DEFAULT_LR[name]
    lr = DEFAULT_GD_LR.get(function, 1e-3)
    # momentum 0.9 multiplies the terminal step by 10: keep heavy-ball methods stable
    return lr * 0.2 if ("momentum" in name or "nesterov" in name) else lr


def run_trajectory(function, optimizer, *, start=None, steps: int = 200, lr: float | None = None,
                   **optimizer_kwargs: Any) -> torch.Tensor:
    """Run ``optimizer`` on a 2-D test function and return the iterates.

    ``w_0 = start``; at each step the loss ``f(w_t)`` is back-propagated and
    ``optimizer.step()`` gives ``w_{t+1}``. Recording stops early if an iterate is not
    finite or leaves 10x the drawing box (divergence).

    Args:
        function: a name in ``TEST_FUNCTIONS`` or a :class:`TestFunction`.
        optimizer: a name in the library's optimizer registry, a ``torch.optim``
            optimizer class, or a factory ``(params, lr=..., **kw) -> Optimizer``.
        start: the start point (default: the function's own start).
        steps: number of optimizer steps (default 200).
        lr: learning rate (default :func:`default_lr`).
        **optimizer_kwargs: passed to the optimizer (momentum, betas, ...).

    Returns:
        A float64 tensor of shape ``(k + 1, 2)``, ``k <= steps``.

    Example:
        >>> path = run_trajectory("quadratic", torch.optim.SGD, steps=10, lr=0.1)
        >>> path.shape
        torch.Size([11, 2])
    """
    fn = _resolve_function(function)
    check_int("steps", steps, ge=1)
    lr = default_lr(optimizer, fn.name) if lr is None else lr
    check_range("lr", lr, ge=0)
    start = fn.start if start is None else start
    w = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64, requires_grad=True)
    opt = _make_optimizer(optimizer, [w], lr, optimizer_kwargs)
    x0, x1, y0, y1 = fn.bounds
    span = 10 * max(x1 - x0, y1 - y0)
    path = [w.detach().clone()]

    def closure():
        opt.zero_grad()
        loss = fn(w)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
        p = w.detach().clone()
        if not torch.isfinite(p).all() or p.abs().max() > span:
            break
        path.append(p)
    return torch.stack(path)


def race(function, optimizers: Mapping[str, Any] | None = None, *, steps: int = 200,
         start=None) -> dict[str, torch.Tensor]:
    """Trajectories of several optimizers from the same start.

    Args:
        function: a test-function name or :class:`TestFunction`.
        optimizers: ``label -> optimizer`` or ``label -> (optimizer, kwargs)``; default:
            every optimizer of the library's registry with its default hyperparameters
            (and ``default_lr``) but the layer-wise ones (``descend.optim.LAYERWISE``:
            on one 2-D vector they are their elementwise fallback, or need a model).
        steps: steps per optimizer (default 200).
        start: common start point (default: the function's).

    Example:
        >>> paths = race("quadratic", {"sgd": (torch.optim.SGD, {"lr": 0.05})}, steps=5)
        >>> paths["sgd"].shape
        torch.Size([6, 2])
    """
    if optimizers is None:
        from descend import optim as dopt

        optimizers = {name: name for name in dopt.OPTIMIZERS.names() if name not in dopt.LAYERWISE}
    out = {}
    for label, spec in optimizers.items():
        opt, kw = (spec if isinstance(spec, tuple) else (spec, {}))
        out[label] = run_trajectory(function, opt, steps=steps, start=start, **kw)
    return out


def _draw_contours(ax, fn: TestFunction):
    import numpy as np

    X, Y, Z = fn.grid(200)
    Z = Z.numpy()
    lo = Z.min()
    levels = np.geomspace(1e-2, max(Z.max() - lo, 1e-1) + 1e-2, 25) + lo - 1e-2
    ax.contour(X.numpy(), Y.numpy(), Z, levels=levels, cmap="viridis", linewidths=0.7)
    for m in fn.minima:
        ax.plot(*m, marker="*", color="black", markersize=12, linestyle="none")
    x0, x1, y0, y1 = fn.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(fn.formula.split(":")[0] if fn.formula else fn.name, fontsize=9)


def plot_trajectories(function, trajectories: Mapping[str, torch.Tensor], path) -> Path:
    """Draw ``trajectories`` over the contours of ``function``; write a PNG; return its path.

    Example:
        >>> import tempfile, os
        >>> p = plot_trajectories("saddle", {"gd": run_trajectory("saddle", torch.optim.SGD, steps=5)},
        ...                       os.path.join(tempfile.mkdtemp(), "t.png"))
        >>> p.exists()
        True
    """
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fn = _resolve_function(function)
    fig, ax = plt.subplots(figsize=(6, 5))
    _draw_contours(ax, fn)
    for label, traj in trajectories.items():
        t = traj.numpy()
        ax.plot(t[:, 0], t[:, 1], marker=".", markersize=2, linewidth=1.2, label=label)
    ax.legend(fontsize=7, loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def animate_trajectories(function, trajectories: Mapping[str, torch.Tensor], path, *,
                         frames: int = 40, fps: int = 10) -> Path:
    """Write the race as an animated GIF (``frames`` frames); return its path.

    Example:
        >>> import tempfile, os
        >>> p = animate_trajectories("quadratic", {"gd": run_trajectory("quadratic", torch.optim.SGD, steps=5)},
        ...                          os.path.join(tempfile.mkdtemp(), "t.gif"), frames=3)
        >>> p.exists()
        True
    """
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    check_int("frames", frames, ge=1)
    check_int("fps", fps, ge=1)
    fn = _resolve_function(function)
    fig, ax = plt.subplots(figsize=(5, 4))
    _draw_contours(ax, fn)
    lines = {k: ax.plot([], [], linewidth=1.2, label=k)[0] for k in trajectories}
    ax.legend(fontsize=7, loc="best")
    longest = max(len(t) for t in trajectories.values())

    def update(i):
        upto = max(1, int(round((i + 1) / frames * longest)))
        for k, t in trajectories.items():
            tt = t[:upto].numpy()
            lines[k].set_data(tt[:, 0], tt[:, 1])
        return list(lines.values())

    anim = FuncAnimation(fig, update, frames=frames, blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(path), writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def write_races(out_dir, *, functions=None, optimizers=None, steps: int = 200,
                gif: bool = True) -> list[Path]:
    """Race every optimizer (default: the library's registry) on every test function
    (default: all); write ``<function>.png`` (and ``<function>.gif``) to ``out_dir``.

    Example:
        >>> import tempfile
        >>> [p.name for p in write_races(tempfile.mkdtemp(), functions=["saddle"],
        ...  optimizers={"gd": (torch.optim.SGD, {"lr": 0.05})}, steps=3, gif=False)]
        ['saddle.png']
    """
    check_int("steps", steps, ge=1)
    written = []
    for name in functions or TEST_FUNCTIONS.names():
        paths = race(name, optimizers, steps=steps)
        written.append(plot_trajectories(name, paths, Path(out_dir) / f"{name}.png"))
        if gif:
            written.append(animate_trajectories(name, paths, Path(out_dir) / f"{name}.gif"))
    return written


__all__ = ["run_trajectory", "race", "plot_trajectories", "animate_trajectories", "default_lr",
           "write_races"]
