"""Monitors: callbacks that look inside training, cheap enough to leave on.

Every monitor samples one optimizer step in ``interval`` (the step about to be taken
when ``trainer.global_step % interval == 0``); outside sampled steps it does nothing
(no hooks run, nothing is read back to the host). Each keeps a table ``self.history``
(``name -> list``, one row per sampled step, with a ``step`` column) and publishes it
as ``trainer.history.monitors[<key>]`` so reports and :func:`descend.analysis.doctor.diagnose`
can read it.

==========================  =================================================================
monitor (registry name)     columns
==========================  =================================================================
``grad_norm_monitor``       ``grad_norm`` = ``sqrt(sum_p |g_p|^2)``; ``grad_norm/<param>``
``activation_monitor``      ``mean/<layer>``, ``std/<layer>`` of the layer's output;
                            ``dead/<layer>`` (ReLU family): fraction of units whose input is
                            ``<= 0`` for every example of the batch (the unit outputs a
                            constant and passes no gradient: a "dead ReLU", notes 002/003);
                            ``saturated/<layer>`` (sigmoid, tanh): fraction of outputs whose
                            local derivative is below ``saturation`` times its maximum
                            (``4 s (1 - s) < saturation``, ``1 - t^2 < saturation``)
``update_ratio_monitor``    ``update_ratio/<param>`` = ``|w_{t+1} - w_t| / |w_t|`` (rule of
                            thumb: around 1e-3)
``hyperparameter_monitor``  ``lr/<group>``, ``momentum/<group>`` (``momentum`` or ``betas[0]``)
==========================  =================================================================

A unit is an index along dimension 1 (features of ``(N, C)``, channels of
``(N, C, ...)``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from descend._extras import require
from descend._validation import check_bool, check_int, check_range
from descend.callbacks import CALLBACKS, Callback

RELU_FAMILY = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.ELU,
               torch.nn.SELU, torch.nn.CELU, torch.nn.RReLU)
SATURATING = (torch.nn.Sigmoid, torch.nn.Tanh)


class _SamplingMonitor(Callback):
    key = "monitor"

    def __init__(self, interval: int = 10):
        self.interval = check_int("interval", interval, ge=1)
        self.history: dict[str, list] = {"step": []}

    def sampled(self, trainer) -> bool:
        return trainer.global_step % self.interval == 0

    def on_fit_begin(self, trainer) -> None:
        hist = getattr(trainer, "history", None)
        if hist is not None:
            monitors = getattr(hist, "monitors", None)
            if monitors is None:
                monitors = {}
                try:
                    hist.monitors = monitors
                except AttributeError:
                    return
            monitors[self.key] = self.history

    def _record(self, step: int, row: dict[str, float]) -> None:
        n = len(self.history["step"])
        self.history["step"].append(step)
        for k, v in row.items():
            self.history.setdefault(k, [math.nan] * n).append(v)
        for col in self.history.values():
            if len(col) < n + 1:
                col.append(math.nan)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.clear()
        self.history.update({k: list(v) for k, v in state["history"].items()})


@CALLBACKS.register("grad_norm_monitor")
class GradientNormMonitor(_SamplingMonitor):
    """Global and per-parameter gradient norms every ``interval`` steps.

    ``grad_norm = sqrt(sum_p |g_p|_2^2)``, read in ``on_after_backward`` (before the
    step, before any clipping by the optimizer). The notes (003) advise plotting it: a
    tiny norm signals a critical point, growth across steps an explosion, and a
    ratio of first-layer to last-layer norms far below 1 vanishing gradients.

    Args:
        interval: sample one step in ``interval`` (default 10).
        per_layer: also log ``grad_norm/<param name>`` (default True).

    Example:
        >>> m = GradientNormMonitor(interval=5)
        >>> m.interval
        5
    """

    key = "grad_norm"

    def __init__(self, interval: int = 10, per_layer: bool = True):
        super().__init__(interval)
        self.per_layer = check_bool("per_layer", per_layer)
        self._done_step = -1

    def on_after_backward(self, trainer) -> None:
        if not self.sampled(trainer) or self._done_step == trainer.global_step:
            return
        self._done_step = trainer.global_step
        named = [(n, p.grad) for n, p in trainer.model.named_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch.stack(torch._foreach_norm([g.detach() for _, g in named]))
        total = torch.linalg.vector_norm(norms)
        values = torch.cat([total.reshape(1), norms]).tolist() if self.per_layer else [float(total)]
        row = {"grad_norm": values[0]}
        if self.per_layer:
            row.update({f"grad_norm/{n}": v for (n, _), v in zip(named, values[1:])})
        self._record(trainer.global_step, row)


@CALLBACKS.register("activation_monitor")
class ActivationMonitor(_SamplingMonitor):
    """Per-layer activation mean/std/histograms, dead-unit and saturation fractions.

    Forward hooks are attached only for sampled steps (in ``on_batch_begin``) and
    removed after the forward pass (in ``on_after_backward``).

    Args:
        interval: sample one step in ``interval`` (default 10).
        layers: module types to watch (default: the ReLU family, sigmoid and tanh).
        bins: histogram bins (default 30; 0 = no histograms).
        saturation: derivative threshold relative to its maximum (default 0.1).

    Example:
        >>> mon = ActivationMonitor(interval=1)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
        >>> mon.attach(model); _ = model(torch.randn(8, 3)); _ = mon.detach()
        >>> sorted(mon.last)
        ['dead/1', 'mean/1', 'std/1']
    """

    key = "activations"

    def __init__(self, interval: int = 10, layers: Sequence[type] | None = None, bins: int = 30,
                 saturation: float = 0.1):
        super().__init__(interval)
        self.layers = tuple(layers) if layers is not None else RELU_FAMILY + SATURATING
        self.bins = check_int("bins", bins, ge=0)
        self.saturation = float(check_range("saturation", saturation, gt=0, le=1))
        self.handles: list = []
        self.last: dict[str, float] = {}
        self.histograms: list[dict[str, Any]] = []  # {"step", "layer", "counts", "edges"}
        self._pending: dict[str, torch.Tensor] = {}
        self._hist: dict[str, torch.Tensor] = {}

    def _hook(self, name: str, module: torch.nn.Module):
        def hook(mod, inputs, output):
            if f"mean/{name}" in self._pending:  # closure re-evaluated: keep the first
                return
            out = output.detach()
            pend = self._pending
            pend[f"mean/{name}"] = out.mean()
            pend[f"std/{name}"] = out.std() if out.numel() > 1 else torch.zeros((), device=out.device)
            if isinstance(mod, RELU_FAMILY):
                pre = inputs[0].detach()
                units = pre.transpose(0, 1).reshape(pre.shape[1], -1) if pre.dim() > 1 else pre[None]
                pend[f"dead/{name}"] = (units <= 0).all(dim=1).float().mean()
            elif isinstance(mod, torch.nn.Sigmoid):
                pend[f"saturated/{name}"] = (4 * out * (1 - out) < self.saturation).float().mean()
            elif isinstance(mod, torch.nn.Tanh):
                pend[f"saturated/{name}"] = ((1 - out * out) < self.saturation).float().mean()
            if self.bins:
                lo, hi = float(out.min()), float(out.max())  # histc needs host floats
                if math.isfinite(lo) and math.isfinite(hi):
                    counts = torch.histc(out.float(), self.bins, lo, hi)
                    self._hist[name] = torch.cat([torch.tensor([lo, hi], device=counts.device), counts])
        return hook

    def attach(self, model: torch.nn.Module) -> None:
        """Register the forward hooks on every watched layer of ``model``."""
        self.detach()
        self._pending, self._hist = {}, {}
        for name, mod in model.named_modules():
            if isinstance(mod, self.layers):
                self.handles.append(mod.register_forward_hook(self._hook(name, mod)))

    def detach(self) -> dict[str, float]:
        """Remove the hooks and read the pending statistics back (one transfer)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        keys = list(self._pending)
        vals = torch.stack(list(self._pending.values())).tolist() if keys else []
        self.last = dict(zip(keys, vals))
        self._pending = {}
        return self.last

    def on_batch_begin(self, trainer, batch):
        if self.sampled(trainer):
            self.attach(trainer.model)
        return None

    def on_after_backward(self, trainer) -> None:
        if not self.handles:
            return
        hist = self._hist
        row = self.detach()
        self._record(trainer.global_step, row)
        for name, h in hist.items():
            h = h.tolist()
            self.histograms.append({"step": trainer.global_step, "layer": name,
                                    "edges": [h[0], h[1]], "counts": h[2:]})
        self._hist = {}

    def on_fit_end(self, trainer) -> None:
        self.detach()

    def on_fit_error(self, trainer, error) -> None:
        self.detach()  # no forward hooks left on the model after a failed fit


@CALLBACKS.register("update_ratio_monitor")
class UpdateRatioMonitor(_SamplingMonitor):
    """Update-to-weight ratio ``|w_{t+1} - w_t| / |w_t|`` per parameter, sampled.

    The weights are copied in ``on_after_backward`` (before the step) and compared in
    ``on_batch_end`` (after it). A ratio far above ~1e-3 suggests a too-large LR, far
    below a too-small one (Karpathy's rule of thumb; not in the notes).

    Args:
        interval: sample one step in ``interval`` (default 10).

    Example:
        >>> from descend.train import Trainer
        >>> m = torch.nn.Linear(2, 2)
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=4,
        ...             callbacks=[UpdateRatioMonitor(interval=2)])
        >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=2)
        >>> table = t.history.monitors["update_ratio"]
        >>> table["step"], sorted(k for k in table if k != "step")   # steps 0 and 2 sampled
        ([0, 2], ['update_ratio/bias', 'update_ratio/weight'])
    """

    key = "update_ratio"

    def __init__(self, interval: int = 10):
        super().__init__(interval)
        self._before: dict[str, torch.Tensor] | None = None

    def on_after_backward(self, trainer) -> None:
        if self.sampled(trainer) and self._before is None:
            self._before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                            if p.requires_grad}

    def on_batch_end(self, trainer, logs) -> None:
        if self._before is None:
            return
        params = dict(trainer.model.named_parameters())
        names = list(self._before)
        new = [params[n].detach() for n in names]
        old = [self._before[n] for n in names]
        diff = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old)))
        base = torch.stack(torch._foreach_norm(old)).clamp_min(1e-12)
        ratios = (diff / base).tolist()
        self._record(trainer.global_step - 1, {f"update_ratio/{n}": r for n, r in zip(names, ratios)})
        self._before = None


@CALLBACKS.register("hyperparameter_monitor")
class HyperparameterMonitor(_SamplingMonitor):
    """LR and momentum (``momentum`` or ``betas[0]``) of every param group, sampled.

    Args:
        interval: sample one step in ``interval`` (default 10).

    Example:
        >>> from descend.train import Trainer
        >>> m = torch.nn.Linear(2, 2)
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), batch_size=4,
        ...             callbacks=[HyperparameterMonitor(interval=1)])
        >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=1)
        >>> t.history.monitors["hyperparameters"]
        {'step': [0, 1], 'lr/0': [0.1, 0.1], 'momentum/0': [0.9, 0.9]}
    """

    key = "hyperparameters"

    def on_after_backward(self, trainer) -> None:
        if not self.sampled(trainer) or (self.history["step"] and
                                          self.history["step"][-1] == trainer.global_step):
            return
        row = {}
        for i, g in enumerate(trainer.optimizer.param_groups):
            row[f"lr/{i}"] = float(g.get("lr", math.nan))
            mom = g.get("momentum", g["betas"][0] if "betas" in g else math.nan)
            row[f"momentum/{i}"] = float(mom)
        self._record(trainer.global_step, row)


def default_monitors(interval: int = 10) -> list[Callback]:
    """All four monitors with the same sampling interval.

    Example:
        >>> [type(m).__name__ for m in default_monitors(5)]
        ['GradientNormMonitor', 'ActivationMonitor', 'UpdateRatioMonitor', 'HyperparameterMonitor']
    """
    return [GradientNormMonitor(interval), ActivationMonitor(interval),
            UpdateRatioMonitor(interval), HyperparameterMonitor(interval)]


def light_monitors(interval: int = 20) -> list[Callback]:
    """The monitors ``descend compare`` / ``descend train`` attach by default.

    :class:`GradientNormMonitor` (global and per-parameter norms) and
    :class:`ActivationMonitor` without histograms (``bins=0``: no host reads inside the
    hooks), both every ``interval`` steps: what :func:`descend.analysis.doctor.diagnose`
    needs for vanishing gradients, dead units and saturation. The update ratio (a weight
    copy per sampled step) and the hyperparameters (already in the per-step log) are left
    out; name them in a recipe's ``monitors:`` list to add them.

    Example:
        >>> [(type(m).__name__, m.interval) for m in light_monitors()]
        [('GradientNormMonitor', 20), ('ActivationMonitor', 20)]
    """
    return [GradientNormMonitor(interval), ActivationMonitor(interval, bins=0)]


def plot_monitors(monitors: dict[str, dict[str, list]], path, *, prefixes=("grad_norm/", "std/",
                  "dead/", "saturated/", "update_ratio/")) -> str:
    """One panel per statistic family (per-layer curves against the step); PNG path.

    Example:
        >>> import os, tempfile
        >>> table = {"step": [1, 2, 3], "grad_norm/w": [1.0, 0.5, 0.2], "std/1": [1.0, 0.9, 0.8]}
        >>> path = plot_monitors({"grads": table}, os.path.join(tempfile.mkdtemp(), "m.png"))
        >>> path.endswith("m.png"), os.path.getsize(path) > 0
        (True, True)
    """
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for pre in prefixes:
        for table in monitors.values():
            cols = [k for k in table if k.startswith(pre)]
            if cols:
                panels.append((pre.rstrip("/"), table["step"], {c[len(pre):]: table[c] for c in cols}))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4 * max(len(panels), 1), 3.2),
                             squeeze=False)
    for ax, (title, steps, cols) in zip(axes[0], panels):
        for name, vals in cols.items():
            ax.plot(steps, vals, label=name, linewidth=1)
        if title in ("grad_norm", "update_ratio"):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def plot_activation_histograms(monitor: "ActivationMonitor", path, *, step: int | None = None) -> str:
    """Histograms of every watched layer's output at one sampled step (default: the
    first), one panel per layer (notes 002: distributions of activations across depth).

    Example:
        >>> import os, tempfile
        >>> from descend.train import Trainer
        >>> mon = ActivationMonitor(interval=1, bins=5)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=4, callbacks=[mon])
        >>> _ = t.fit((torch.randn(8, 3), torch.zeros(8, dtype=torch.long)), epochs=1)
        >>> [(h["step"], h["layer"], sum(h["counts"])) for h in mon.histograms]   # 4 x 4 values a step
        [(0, '1', 16.0), (1, '1', 16.0)]
        >>> path = plot_activation_histograms(mon, os.path.join(tempfile.mkdtemp(), "h.png"), step=1)
        >>> os.path.getsize(path) > 0
        True
    """
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not monitor.histograms:
        raise ValueError("`monitor` must have recorded histograms (bins > 0 and a sampled step). "
                         "Received: monitor with no histograms")
    step = monitor.histograms[0]["step"] if step is None else step
    hs = [h for h in monitor.histograms if h["step"] == step]
    if not hs:
        raise ValueError(f"`step` must be a sampled step. Received: step={step}")
    fig, axes = plt.subplots(1, len(hs), figsize=(2.6 * len(hs), 2.4), squeeze=False)
    for ax, h in zip(axes[0], hs):
        lo, hi = h["edges"]
        n = len(h["counts"])
        width = (hi - lo) / n if hi > lo else 1.0
        ax.bar([lo + (i + 0.5) * width for i in range(n)], h["counts"], width=width)
        ax.set_title(f"layer {h['layer']}", fontsize=8)
    fig.suptitle(f"activations at step {step}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def save_monitors(source, directory) -> str:
    """Write the monitor tables (``trainer.history.monitors``, or that dict) to
    ``directory/monitors.json``, where ``descend doctor`` looks for them; return the path.
    Non-finite values are written as ``null``.

    Example:
        >>> import json, tempfile
        >>> path = save_monitors({"grads": {"step": [1, 2], "grad_norm": [0.5, float("nan")]}},
        ...                      tempfile.mkdtemp())
        >>> json.load(open(path))
        {'grads': {'step': [1, 2], 'grad_norm': [0.5, None]}}
    """
    import json
    import os

    monitors = source
    if not isinstance(source, dict):
        hist = getattr(source, "history", source)
        monitors = getattr(hist, "monitors", None) or {}

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "monitors.json")
    with open(path, "w") as fh:
        json.dump(clean(monitors), fh)
    return path


__all__ = ["GradientNormMonitor", "ActivationMonitor", "UpdateRatioMonitor",
           "HyperparameterMonitor", "default_monitors", "light_monitors", "plot_monitors", "plot_activation_histograms", "save_monitors"]
