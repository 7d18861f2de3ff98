"""Where the playground gets its math: the library's registries, in one place.

The server never computes an update, a schedule, a surface or a network by itself: it
asks this module, which resolves each name through descend's registries
(``descend.optim``, ``descend.schedules``, ``descend.analysis.testfunctions``,
``descend.nn``, ``descend.init``, ``descend.data``). Where one of those parts is not
installed in this build, the matching torch component (``torch.optim``,
``torch.nn.init``, ``torch.nn``) or the playground's own surfaces / toy sets are used,
and :func:`backends` says which.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn

from descend._validation import check_choice, check_real

# Arguments of torch's optimizers that select an implementation, not the math.
_IMPLEMENTATION_ARGS = {"foreach", "maximize", "capturable", "differentiable", "fused",
                        "params", "decoupled_weight_decay"}


def _try(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# ------------------------------------------------------------------ optimizers

_TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
}


def _optim():
    mod = _try("descend.optim")
    return mod if mod is not None and hasattr(mod, "OPTIMIZERS") else None


def optimizer_factories() -> dict[str, Any]:
    """Name -> factory ``f(params, **hyper)`` of every optimizer offered."""
    mod = _optim()
    if mod is None:
        return dict(_TORCH_OPTIMIZERS)
    return {name: mod.OPTIMIZERS.get(name) for name in mod.OPTIMIZERS.names()}


def _hyper_spec(factory) -> list[dict[str, Any]]:
    """The tunable keyword arguments of ``factory`` with their defaults (for the page)."""
    out = []
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return out
    for p in sig.parameters.values():
        if p.name in _IMPLEMENTATION_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        d = p.default
        if d is inspect.Parameter.empty:
            continue
        if isinstance(d, torch.Tensor):
            d = d.item()
        if isinstance(d, bool) or isinstance(d, (int, float)) or isinstance(d, str) or \
                (isinstance(d, tuple) and all(isinstance(v, (int, float)) for v in d)):
            out.append({"name": p.name, "default": list(d) if isinstance(d, tuple) else d})
    return out


def optimizer_specs() -> list[dict[str, Any]]:
    """For each optimizer: its name, first doc line and tunable hyperparameters."""
    specs = []
    for name, f in sorted(optimizer_factories().items()):
        doc = (inspect.getdoc(f) or "").splitlines()
        specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": _hyper_spec(f)})
    return specs


def create_optimizer(name: str, params, hyper: dict[str, Any]):
    """Build optimizer ``name`` over ``params`` with keyword hyperparameters ``hyper``.

    Every numeric hyperparameter must be finite (checked here, whatever the backend);
    ranges and unknown keywords are checked by the optimizer itself.
    """
    factories = optimizer_factories()
    check_choice("optimizer", name, sorted(factories))
    for k, v in hyper.items():
        for i, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                check_real(k if not isinstance(v, (list, tuple)) else f"{k}[{i}]", x)
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
    mod = _optim()
    if mod is not None:
        return mod.create(name, list(params), **hyper)
    try:
        return factories[name](list(params), **hyper)
    except TypeError as e:  # torch's message for an unknown keyword
        raise TypeError(f"{name} got an unknown or wrong argument: {e}. "
                        f"Received: {', '.join(f'{k}={v!r}' for k, v in hyper.items())}") from e


# ------------------------------------------------------------------ schedules

def schedule_specs() -> list[dict[str, Any]]:
    """Schedules offered for ``lr`` (``constant`` = none), with their arguments."""
    specs = [{"name": "constant", "doc": "the learning rate stays as set", "hyper": []}]
    mod = _try("descend.schedules")
    if mod is None or not hasattr(mod, "SCHEDULES"):
        return specs
    for name in mod.SCHEDULES.names():
        f = mod.SCHEDULES.get(name)
        doc = (inspect.getdoc(f) or "").splitlines()
        specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": _hyper_spec(f)})
    return specs


def attach_schedule(optimizer, name: str, hyper: dict[str, Any]):
    """A scheduler driving ``lr`` of ``optimizer`` (``None`` for ``constant``)."""
    names = [s["name"] for s in schedule_specs()]
    check_choice("schedule", name, names)
    if name == "constant":
        return None
    mod = importlib.import_module("descend.schedules")
    sched = mod.SCHEDULES.create(name, **hyper)
    return mod.Scheduler(optimizer, {"lr": sched})


# ------------------------------------------------------------------ surfaces

def _testfunctions():
    mod = _try("descend.analysis.testfunctions")
    return mod if mod is not None and hasattr(mod, "parse_expression") else None


def surfaces() -> dict[str, Any]:
    """Name -> :class:`~descend.playground.surfaces.Surface`."""
    from descend.playground.surfaces import SURFACES

    return dict(SURFACES)


def parse_expression(text: str):
    """A safe ``f(x, y)`` from a typed formula (no ``eval``)."""
    from descend.playground.surfaces import parse_expression as parse

    return parse(text)


# ------------------------------------------------------------------ data, models, init

def make_dataset(name: str, **kw):
    """``(x_train, y_train, x_test, y_test)`` of a 2-D toy set."""
    from descend.playground.datasets2d import make_toy2d

    return make_toy2d(name, **kw)


def dataset_names() -> list[str]:
    from descend.playground.datasets2d import DATASETS2D

    return list(DATASETS2D)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU}
NORMS = ("none", "batch", "layer")


def build_mlp(hidden: list[int], activation: str, norm: str, dropout: float) -> nn.Module:
    """A 2 -> hidden... -> 2 perceptron: Linear, [norm], activation, [dropout] per layer."""
    check_choice("activation", activation, sorted(ACTIVATIONS))
    check_choice("norm", norm, NORMS)
    layers: list[nn.Module] = []
    width = 2
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h))
        elif norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


def _normal_001(w):
    return nn.init.normal_(w, 0.0, 0.01)


INITS = {
    "default": None,  # torch's own: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
    "normal_0.01": _normal_001,
    "zeros": nn.init.zeros_,
}


def apply_init(model: nn.Module, scheme: str) -> None:
    """Re-initialise every Linear weight of ``model`` with ``scheme``; biases to zero."""
    check_choice("init", scheme, list(INITS))
    fn = INITS[scheme]
    if fn is None:
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            fn(m.weight)
            nn.init.zeros_(m.bias)


def backends() -> dict[str, str]:
    """Which module provides each part (shown on the page's footer)."""
    return {
        "optimizers": "descend.optim" if _optim() else "torch.optim",
        "schedules": "descend.schedules" if len(schedule_specs()) > 1 else "constant only",
        "surfaces": "descend.playground.surfaces",
        "datasets": "descend.playground.datasets2d",
        "models": "torch.nn (2-D perceptron)",
        "init": "torch.nn.init",
    }
