"""PNG plots of a comparison: loss, accuracy, learning rate and gradient norm.

Each variant is one colour; the line is the mean over seeds, the band spans the
minimum and maximum over seeds. Per-step training loss is smoothed with an
exponential moving average (``s_t = a s_{t-1} + (1 - a) x_t``, ``a = 0.9``, started at
``x_0``) so that the curves of different optimizers can be told apart.
:func:`write_monitor_plots` draws what the monitors recorded (per-layer gradient norms).
Uses matplotlib's object API with the Agg canvas (no display, no global state).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from descend._extras import require

PLOTS = [
    ("loss_vs_steps.png", "Loss vs steps"),
    ("accuracy_vs_steps.png", "Accuracy vs steps"),
    ("loss_vs_seconds.png", "Loss vs training seconds"),
    ("accuracy_vs_seconds.png", "Accuracy vs training seconds"),
    ("lr_vs_steps.png", "Learning rate and momentum vs steps"),
    ("grad_norm_vs_steps.png", "Gradient norm vs steps"),
]


def ema(values: list[float], a: float = 0.9) -> np.ndarray:
    """Exponential moving average ``s_t = a s_{t-1} + (1-a) x_t`` with ``s_0 = x_0``.

    Example:
        >>> ema([1.0, 0.0, 0.0], a=0.5).tolist()
        [1.0, 0.5, 0.25]
    """
    x = np.asarray([math.nan if v is None else v for v in values], dtype=float)
    out = np.empty_like(x)
    s = math.nan
    for i, v in enumerate(x):
        if math.isnan(v):
            out[i] = s
            continue
        s = v if math.isnan(s) else a * s + (1 - a) * v
        out[i] = s
    return out


def _stack(runs: list[dict], table: str, key: str) -> np.ndarray | None:
    cols = [(r.get(table) or {}).get(key) for r in runs]
    if any(c is None for c in cols) or not cols:
        return None
    n = min(len(c) for c in cols)
    if n == 0:
        return None
    return np.array([[math.nan if v is None else v for v in c[:n]] for c in cols], dtype=float)


def _band(ax, x, ys, color, label, smooth=False, style="-"):
    if ys is None or x is None:
        return
    if smooth:
        ys = np.stack([ema(list(y)) for y in ys])
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(ys, axis=0)
            lo, hi = np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
    ax.plot(x, mean, color=color, label=label, linewidth=1.6, linestyle=style)
    if ys.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)


def _figure(ncols: int, nrows: int = 1, *, panels: int | None = None, row_height: float = 3.9):
    """A figure of ``nrows x ncols`` cells and the axes of its first ``panels`` of them."""
    require("matplotlib", "plots need", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.2 * ncols, row_height * nrows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    n = ncols * nrows if panels is None else panels
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]


def _x(runs, table, key):
    xs = _stack(runs, table, key)
    return None if xs is None else np.nanmean(xs, axis=0)


STYLES = ["-", "--", "-.", ":"]


def same_curves(curves: dict[str, tuple[Any, Any]]) -> list[list[str]]:
    """Group the variants whose curves are identical (same x and y, NaN equal to NaN).

    Identical curves drawn one over the other hide each other (six variants with the same
    constant learning rate show one colour); each group is drawn once, labelled with
    every member.

    >>> a = (np.arange(3), np.ones((1, 3)))
    >>> same_curves({"sgd": a, "nesterov": a, "adam": (np.arange(3), np.zeros((1, 3)))})
    [['sgd', 'nesterov'], ['adam']]
    """
    groups: list[list[str]] = []
    keys: list[tuple[Any, Any]] = []
    for name, (x, ys) in curves.items():
        for g, (gx, gy) in zip(groups, keys):
            if (x is None) == (gx is None) and (ys is None) == (gy is None) and (
                    x is None or (np.shape(x) == np.shape(gx) and np.array_equal(x, gx, equal_nan=True))) and (
                    ys is None or (np.shape(ys) == np.shape(gy) and np.array_equal(ys, gy, equal_nan=True))):
                g.append(name)
                break
        else:
            groups.append([name])
            keys.append((x, ys))
    return groups


def _panel(ax, variants, colors, styles, x_of, y_of, smooth=False, scale=1.0):
    """Draw each variant's mean curve (band: min-max over seeds); identical curves once."""
    curves = {}
    for v in variants:
        x, ys = x_of(v["runs"]), y_of(v["runs"])
        curves[v["name"]] = (x, None if ys is None else ys * scale)
    for group in same_curves(curves):
        x, ys = curves[group[0]]
        label = group[0] if len(group) == 1 else " = ".join(group)
        _band(ax, x, ys, colors[group[0]], label, smooth=smooth, style=styles[group[0]])


def write_plots(variants: list[dict[str, Any]], out_dir: str) -> list[tuple[str, str]]:
    """Write the PNGs of :data:`PLOTS` into ``out_dir``; return ``[(file, title)]``.

    Accuracies are drawn in % (as the tables show them). Each variant has its colour and
    a line style; curves that coincide exactly are drawn once, labelled ``a = b``.
    """
    require("matplotlib", "plots need", "plots")
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    colors = {v["name"]: cmap(i % 10) for i, v in enumerate(variants)}
    styles = {v["name"]: STYLES[(i // 10 + i) % len(STYLES)] for i, v in enumerate(variants)}
    written = []

    def save(fig, axes, fname, title):
        for ax in axes:
            ax.grid(True, alpha=0.3)
        per_axis = [ax.get_legend_handles_labels() for ax in axes]
        if len({tuple(lb) for _, lb in per_axis}) > 1:  # curves grouped differently per panel
            for ax, (handles, labels) in zip(axes, per_axis):
                if handles:
                    ax.legend(handles, labels, fontsize=8, loc="best")
        elif per_axis and per_axis[0][0]:
            axes[-1].legend(*per_axis[0], fontsize=8, loc="best")
        fig.suptitle(title)
        fig.savefig(os.path.join(out_dir, fname))
        written.append((fname, title))

    def get(table, key):
        return lambda runs: _stack(runs, table, key)

    def getx(table, key):
        return lambda runs: _x(runs, table, key)

    for unit, xkey, steps_x in (("steps", "step", True), ("seconds", "time", False)):
        fig, (a1, a2) = _figure(2)
        _panel(a1, variants, colors, styles, getx("steps", "step" if steps_x else "time"), get("steps", "loss"),
               smooth=True)
        _panel(a2, variants, colors, styles, getx("epochs", xkey), get("epochs", "val_loss"))
        a1.set_title("training loss (per step, EMA 0.9)")
        a2.set_title("validation loss (per epoch)")
        for a in (a1, a2):
            a.set_xlabel(unit)
            a.set_ylabel("loss")
            a.set_yscale("log")
        save(fig, [a1, a2], f"loss_vs_{unit}.png", f"Loss vs {'steps' if steps_x else 'training seconds'}")

        fig, (a1, a2) = _figure(2)
        _panel(a1, variants, colors, styles, getx("epochs", xkey), get("epochs", "train_acc"), scale=100.0)
        _panel(a2, variants, colors, styles, getx("epochs", xkey), get("epochs", "val_acc"), scale=100.0)
        a1.set_title("training accuracy (running, per epoch)")
        a2.set_title("validation accuracy (per epoch)")
        for a in (a1, a2):
            a.set_xlabel(unit)
            a.set_ylabel("accuracy (%)")
        save(fig, [a1, a2], f"accuracy_vs_{unit}.png",
             f"Accuracy vs {'steps' if steps_x else 'training seconds'}")

    fig, (a1, a2) = _figure(2)
    _panel(a1, variants, colors, styles, getx("steps", "step"), get("steps", "lr"))
    _panel(a2, variants, colors, styles, getx("steps", "step"), get("steps", "momentum"))
    a1.set_title("learning rate")
    a1.set_yscale("log")
    a2.set_title("momentum (or Adam's beta1)")
    for a in (a1, a2):
        a.set_xlabel("steps")
    save(fig, [a1, a2], "lr_vs_steps.png", "Learning rate and momentum vs steps")

    fig, (a1,) = _figure(1)
    _panel(a1, variants, colors, styles, getx("steps", "step"), get("steps", "grad_norm"), smooth=True)
    a1.set_title("global gradient norm ||g||_2 (EMA 0.9)")
    a1.set_xlabel("steps")
    a1.set_yscale("log")
    save(fig, [a1], "grad_norm_vs_steps.png", "Gradient norm vs steps")
    return written


def monitor_table(run: dict, key: str) -> dict[str, list] | None:
    """The table monitor ``key`` recorded in one run's result (None when absent).

    >>> monitor_table({"monitors": {"grad_norm": {"step": [1]}}}, "grad_norm"), monitor_table({}, "x")
    ({'step': [1]}, None)
    """
    return (run.get("monitors") or {}).get(key)


def layer_columns(runs: list[dict], key: str, prefix: str) -> list[str]:
    """Column suffixes ``<layer>`` of ``<prefix><layer>`` in monitor ``key``, in recorded order."""
    names: list[str] = []
    for r in runs:
        for col in monitor_table(r, key) or {}:
            if col.startswith(prefix) and col[len(prefix):] not in names:
                names.append(col[len(prefix):])
    return names


def write_monitor_plots(variants: list[dict[str, Any]], out_dir: str) -> list[tuple[str, str]]:
    """``grad_norm_per_layer.png``: one panel per variant, one line per weight tensor
    (mean over seeds, min-max band) of ``grad_norm/<param>`` against the step; nothing
    when no run recorded per-layer gradient norms. Returns ``[(file, title)]``."""
    require("matplotlib", "plots need", "plots")
    from matplotlib import colormaps
    panels = []
    for v in variants:
        names = layer_columns(v["runs"], "grad_norm", "grad_norm/")
        weights = [n for n in names if n.endswith("weight")] or names
        if weights:
            panels.append((v, weights))
    if not panels:
        return []
    cmap = colormaps["viridis"]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _figure(ncols, nrows, panels=len(panels), row_height=3.6)
    for ax, (v, weights) in zip(axes, panels):
        rows = [{"steps": monitor_table(r, "grad_norm") or {}} for r in v["runs"]]
        x = _x(rows, "steps", "step")
        from descend.analysis.labels import column_label
        labels = next((r.get("layer_names") for r in v["runs"] if r.get("layer_names")), {})
        for j, name in enumerate(weights):
            color = cmap(j / max(1, len(weights) - 1) * 0.9)
            _band(ax, x, _stack(rows, "steps", "grad_norm/" + name), color, column_label(name, labels))
        ax.set_title(v["name"], fontsize=10)
        ax.set_xlabel("steps")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    title = "Gradient norm per layer vs steps"
    fig.suptitle(title + " (first layer darkest)")
    fname = "grad_norm_per_layer.png"
    fig.savefig(os.path.join(out_dir, fname))
    return [(fname, title)]
