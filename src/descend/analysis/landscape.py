"""Loss landscapes: 1-D slices between weight vectors and 2-D surfaces on
filter-normalized random directions.

* Line: ``L((1 - a) w_A + a w_B)`` for ``a`` in ``[-extend, 1 + extend]`` (Goodfellow
  et al., 2015, from the initial to the final weights; or between two solutions).
* Surface: ``L(w* + a d_1 + b d_2)`` where each ``d`` is a Gaussian direction rescaled
  filter by filter, ``d_{i,j} <- d_{i,j} / |d_{i,j}| * |w_{i,j}|`` (filter ``j`` of layer
  ``i`` = one output row/channel), with biases and normalization parameters (1-D
  tensors) set to 0, as in Li et al., "Visualizing the Loss Landscape of Neural Nets",
  2018. Filter normalization makes plots of differently scaled networks comparable.

Weights are given as a model, a state dict or a flat parameter vector
(:func:`get_vector`); buffers (batch-norm running statistics) are those of ``model``,
and losses are evaluated in ``model.eval()`` mode without gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from descend._extras import require
from descend._validation import check_int, check_range, fail


def get_vector(model_or_state, like: torch.nn.Module | None = None) -> torch.Tensor:
    """Flatten a model's parameters (or a state dict / vector) into one detached vector.

    Example:
        >>> get_vector(torch.nn.Linear(2, 3)).shape
        torch.Size([9])
    """
    if isinstance(model_or_state, torch.nn.Module):
        return parameters_to_vector(model_or_state.parameters()).detach().clone()
    if torch.is_tensor(model_or_state):
        if model_or_state.dim() != 1:
            fail("weights", "a flat (1-D) parameter vector", tuple(model_or_state.shape))
        return model_or_state.detach().clone()
    if isinstance(model_or_state, dict):
        if like is None:
            fail("like", "a model when weights are a state dict", like)
        names = [n for n, _ in like.named_parameters()]
        missing = [n for n in names if n not in model_or_state]
        if missing:
            fail("weights", f"a state dict with every parameter (missing {missing[:3]})",
                 sorted(model_or_state)[:5])
        return torch.cat([model_or_state[n].detach().reshape(-1) for n in names]).clone()
    fail("weights", "a model, a state dict or a 1-D tensor", type(model_or_state).__name__,
         TypeError)


def set_vector(model: torch.nn.Module, vector: torch.Tensor) -> None:
    """Write a flat parameter vector into ``model`` in place.

    >>> layer = torch.nn.Linear(2, 1)
    >>> set_vector(layer, torch.tensor([1.0, 2.0, 3.0]))       # weight (1 x 2), then bias
    >>> layer.weight.tolist(), layer.bias.tolist()
    ([[1.0, 2.0]], [3.0])
    """
    n = sum(p.numel() for p in model.parameters())
    if vector.numel() != n:
        fail("vector", f"of length {n} (the model's parameter count)", vector.numel())
    with torch.no_grad():
        vector_to_parameters(vector.to(next(model.parameters())), model.parameters())


def _batches(data):
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        yield data
    else:
        yield from data


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn: Callable, data, *, accuracy: bool = False):
    """Mean loss (and accuracy) of ``model`` on ``data`` in eval mode.

    ``data`` is one ``(x, y)`` pair of tensors or an iterable of them; the mean is
    weighted by batch size. ``loss_fn`` must average over the batch.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> round(evaluate(m, lambda o, y: (o * 0).sum(), (torch.ones(3, 2), torch.zeros(3))), 1)
        0.0
    """
    was = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    for x, y in _batches(data):
        out = model(x)
        b = len(x)
        total += float(loss_fn(out, y)) * b
        if accuracy:
            correct += int((out.argmax(-1) == y).sum())
        n += b
    model.train(was)
    if n == 0:
        fail("data", "non-empty", data)
    return (total / n, correct / n) if accuracy else total / n


def loss_along_line(model: torch.nn.Module, loss_fn: Callable, data, start, end, *,
                    points: int = 25, extend: float = 0.0):
    """Loss on the segment ``w(a) = (1 - a) start + a end``, ``a`` in ``[-extend, 1+extend]``.

    Args:
        model: the architecture (its weights are restored afterwards).
        loss_fn: ``loss_fn(outputs, y)``, batch mean.
        data: ``(x, y)`` or an iterable of batches.
        start, end: model, state dict or flat vector.
        points: number of values of ``a`` (default 25).
        extend: how far to go beyond both ends, as a fraction (default 0).

    Returns:
        ``(alphas, losses)`` as float64 tensors.

    Example:
        >>> m = torch.nn.Linear(1, 1, bias=False)
        >>> a, l = loss_along_line(m, torch.nn.functional.mse_loss, (torch.ones(1, 1), torch.zeros(1, 1)),
        ...                        torch.tensor([0.0]), torch.tensor([2.0]), points=3)
        >>> l.tolist()
        [0.0, 1.0, 4.0]
    """
    check_int("points", points, ge=2)
    check_range("extend", extend, ge=0)
    a_vec, b_vec = get_vector(start, model), get_vector(end, model)
    saved = get_vector(model)
    alphas = torch.linspace(-extend, 1 + extend, points, dtype=torch.float64)
    losses = []
    try:
        for a in alphas:
            set_vector(model, (1 - a) * a_vec + a * b_vec)
            losses.append(evaluate(model, loss_fn, data))
    finally:
        set_vector(model, saved)
    return alphas, torch.tensor(losses, dtype=torch.float64)


def filter_normalized_direction(model: torch.nn.Module, *, seed: int = 0,
                                center=None) -> torch.Tensor:
    """A random direction with each filter rescaled to the norm of the matching weights.

    ``d ~ N(0, I)``; for every parameter with ``dim >= 2`` and each output filter ``j``:
    ``d_j <- d_j * |w_j| / |d_j|``; 1-D parameters (biases, normalization) get ``d = 0``.

    Example:
        >>> m = torch.nn.Linear(3, 2)
        >>> d = filter_normalized_direction(m)
        >>> torch.allclose(d[:6].view(2, 3).norm(dim=1), m.weight.detach().norm(dim=1))
        True
    """
    gen = torch.Generator().manual_seed(seed)
    w = get_vector(center if center is not None else model, model)
    parts, i = [], 0
    for p in model.parameters():
        wp = w[i:i + p.numel()].view_as(p)
        i += p.numel()
        if p.dim() <= 1:
            parts.append(torch.zeros(p.numel(), dtype=w.dtype))
            continue
        d = torch.randn(p.shape, generator=gen, dtype=w.dtype)
        wn = wp.reshape(p.shape[0], -1).norm(dim=1)
        dn = d.reshape(p.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        d = d * (wn / dn).view(-1, *([1] * (p.dim() - 1)))
        parts.append(d.reshape(-1))
    return torch.cat(parts)


def loss_surface_2d(model: torch.nn.Module, loss_fn: Callable, data, *, center=None,
                    directions=None, span: float = 1.0, points: int = 21, seed: int = 0):
    """Loss on the plane ``w* + a d_1 + b d_2``, ``a, b`` in ``[-span, span]``.

    Args:
        model: the architecture (weights restored afterwards).
        loss_fn, data: as in :func:`loss_along_line`.
        center: ``w*`` (default: the model's current weights).
        directions: ``(d_1, d_2)`` flat vectors (default: two filter-normalized random
            directions, seeds ``seed`` and ``seed + 1``).
        span: half-width of the square (default 1).
        points: grid points per axis (default 21).
        seed: seed of the random directions.

    Returns:
        ``(alphas, betas, Z)`` with ``Z[i, j] = L(w* + alphas[j] d_1 + betas[i] d_2)``.

    Example:
        >>> m = torch.nn.Linear(2, 1)
        >>> a, b, Z = loss_surface_2d(m, torch.nn.functional.mse_loss,
        ...                           (torch.ones(4, 2), torch.zeros(4, 1)), points=3)
        >>> Z.shape
        torch.Size([3, 3])
    """
    check_int("points", points, ge=2)
    check_range("span", span, gt=0)
    w0 = get_vector(center if center is not None else model, model)
    if directions is None:
        directions = (filter_normalized_direction(model, seed=seed, center=w0),
                      filter_normalized_direction(model, seed=seed + 1, center=w0))
    d1, d2 = directions
    saved = get_vector(model)
    alphas = torch.linspace(-span, span, points, dtype=torch.float64)
    Z = torch.zeros(points, points, dtype=torch.float64)
    try:
        for i, b in enumerate(alphas):
            for j, a in enumerate(alphas):
                set_vector(model, w0 + a * d1 + b * d2)
                Z[i, j] = evaluate(model, loss_fn, data)
    finally:
        set_vector(model, saved)
    return alphas, alphas.clone(), Z


def _plt():
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(curves: dict, path, *, xlabel: str = "alpha", ylabel: str = "loss",
               title: str = "", logy: bool = False) -> Path:
    """Plot ``label -> (x, y)`` curves to a PNG; return its path.

    >>> import tempfile
    >>> x = torch.linspace(-1, 1, 5)
    >>> p = plot_lines({"w^2": (x, x ** 2)}, Path(tempfile.mkdtemp()) / "line.png", title="a parabola")
    >>> p.name, p.stat().st_size > 0
    ('line.png', True)
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in curves.items():
        ax.plot(torch.as_tensor(x).tolist(), torch.as_tensor(y).tolist(), marker=".", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_surface(alphas, betas, Z, path, *, title: str = "loss surface") -> Path:
    """Contour plot of a :func:`loss_surface_2d` result (log-spaced levels); PNG path.

    >>> import tempfile
    >>> a = torch.linspace(-1, 1, 9)
    >>> Z = a[None, :] ** 2 + a[:, None] ** 2 + 0.1               # a bowl
    >>> p = plot_surface(a, a, Z, Path(tempfile.mkdtemp()) / "bowl.png")
    >>> p.name, p.stat().st_size > 0
    ('bowl.png', True)
    """
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    z = Z.numpy()
    z = np.where(np.isfinite(z), z, np.nanmax(z[np.isfinite(z)]) if np.isfinite(z).any() else 1.0)
    levels = np.geomspace(max(z.min(), 1e-6), max(z.max(), z.min() * 1.01 + 1e-6), 30)
    cs = ax.contour(alphas.numpy(), betas.numpy(), z, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax)
    ax.plot(0, 0, "k*")
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["get_vector", "set_vector", "evaluate", "loss_along_line",
           "filter_normalized_direction", "loss_surface_2d", "plot_lines", "plot_surface"]
