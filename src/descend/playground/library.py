"""Where the playground gets its math: the library's registries, in one place.

The server never computes an update, a schedule, a surface or a data set by itself: it
asks this module, which resolves each name through descend's registries
(``descend.optim``, ``descend.schedules``, ``descend.analysis.testfunctions``,
``descend.data``). The 2-D perceptron is assembled from ``torch.nn`` layers and
initialised with ``torch.nn.init`` (see :func:`build_mlp`, :func:`apply_init`); if
``descend.optim`` is absent, ``torch.optim``'s classes of the same names are used.
:func:`backends` says which module computed what.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn

from descend._validation import check_choice, check_real

# Keys of a param group that select an implementation, not the math (never shown).
_IMPLEMENTATION_ARGS = {"foreach", "maximize", "capturable", "differentiable", "fused",
                        "params", "initial_lr"}
# Shown folded under "more" on the page: cross-cutting extras of every optimizer.
ADVANCED = {"clip_value", "clip_norm", "clip_norm_type", "grad_noise", "grad_noise_gamma",
            "decoupled_weight_decay", "weight_decay_exclude", "l1", "l1_mode", "eps_root",
            "lookahead", "momentum_form", "dampening", "lr_decay", "initial_accumulator_value"}
# Schedules offered for the learning rate: pure functions of the step with number args.
LR_SCHEDULES = ("cosine", "cyclical", "exponential", "inverse_time", "linear_to",
                "step_decay", "triangular")


def _try(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, tuple):
        v = list(v)
    return v


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


def optimizer_specs() -> list[dict[str, Any]]:
    """For each optimizer: name, first doc line and hyperparameters with their defaults.

    The defaults are read from the param group of an optimizer built on a dummy
    parameter, so presets of registry entries (``momentum=0.9`` of ``nesterov``) show.
    """
    specs = []
    for name, f in sorted(optimizer_factories().items()):
        probe = [torch.zeros(1, requires_grad=True)]
        try:
            group = f(probe).param_groups[0]
        except (TypeError, ValueError):  # an optimizer without a default lr
            group = f(probe, lr=0.01).param_groups[0]
        hyper = [{"name": k, "default": _jsonable(v), "advanced": k in ADVANCED}
                 for k, v in group.items() if k not in _IMPLEMENTATION_ARGS]
        hyper.sort(key=lambda h: (h["advanced"], h["name"] != "lr"))
        doc = (inspect.getdoc(f) or "").splitlines()
        specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": hyper})
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

def _arg_spec(factory) -> list[dict[str, Any]]:
    """Keyword arguments of a schedule factory; required ones get ``default: None``."""
    out = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        d = None if p.default is inspect.Parameter.empty else _jsonable(p.default)
        out.append({"name": p.name, "default": d, "advanced": False})
    return out


def schedule_specs() -> list[dict[str, Any]]:
    """Schedules offered for ``lr`` (``none`` keeps it as set), with their arguments.

    A blank ``e0`` (the initial value) is filled with the optimizer's ``lr``.
    """
    specs = [{"name": "none", "doc": "the learning rate stays as set", "hyper": []}]
    mod = _try("descend.schedules")
    if mod is None or not hasattr(mod, "SCHEDULES"):
        return specs
    for name in LR_SCHEDULES:
        if name in mod.SCHEDULES:
            f = mod.SCHEDULES.get(name)
            doc = (inspect.getdoc(f) or "").splitlines()
            specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": _arg_spec(f)})
    return specs


def attach_schedule(optimizer, name: str, hyper: dict[str, Any]):
    """A ``descend.schedules.Scheduler`` driving ``lr`` of ``optimizer`` (``None`` for none)."""
    check_choice("schedule", name, [s["name"] for s in schedule_specs()])
    if name == "none":
        return None
    mod = importlib.import_module("descend.schedules")
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if "e0" not in hyper and "e0" in inspect.signature(mod.SCHEDULES.get(name)).parameters:
        hyper["e0"] = float(optimizer.param_groups[0]["lr"])
    return mod.Scheduler(optimizer, {"lr": mod.SCHEDULES.create(name, **hyper)})


# ------------------------------------------------------------------ surfaces

def surfaces() -> dict[str, Any]:
    """Name -> ``TestFunction`` (fn, bounds, start, minima, formula) of the registry."""
    from descend.analysis.testfunctions import TEST_FUNCTIONS

    return {name: TEST_FUNCTIONS.create(name) for name in TEST_FUNCTIONS.names()}


def parse_expression(text: str):
    """A safe ``f(x, y)`` from a typed formula (an AST whitelist; no ``eval``).

    ``^`` is read as a power (``x^2`` = ``x**2``), as people type it on a page.
    """
    from descend.analysis.testfunctions import parse_expression as parse

    return parse(text.replace("^", "**") if isinstance(text, str) else text)


# ------------------------------------------------------------------ data, models, init

def make_dataset(name: str, *, n: int, noise: float, test_fraction: float, seed: int):
    """``(x_train, y_train, x_test, y_test)`` of a two-class ``descend.data`` toy2d set."""
    from descend.data import load

    d = load("toy2d", kind=name, n_samples=n, noise=noise, classes=2, data_seed=seed,
             test_fraction=test_fraction, val_fraction=0.0)
    return (*d.train.tensors, *d.test.tensors)


def dataset_names() -> list[str]:
    from descend.data.toy2d import KINDS

    return list(KINDS)


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
        "schedules": "descend.schedules" if len(schedule_specs()) > 1 else "none",
        "surfaces": "descend.analysis.testfunctions",
        "datasets": "descend.data (toy2d)",
        "models": "torch.nn (2-D perceptron)",
        "init": "torch.nn.init",
    }
