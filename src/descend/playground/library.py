"""Where the playground gets its math: the library's registries, in one place.

The server never computes an update, a schedule, a surface, a data set, a model or an
initialization by itself: it asks this module, which resolves each name through
descend's registries (``descend.optim``, ``descend.schedules``,
``descend.analysis.testfunctions``, ``descend.data``, ``descend.nn.MODELS``,
``descend.init``). :func:`backends` says which module computed what.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn

from descend import init as dinit
from descend import optim, schedules
from descend._validation import check_choice, check_real
from descend.nn import ACTIVATIONS as NN_ACTIVATIONS
from descend.nn import MODELS

# Keys of a param group that select an implementation, not the math (never shown).
_IMPLEMENTATION_ARGS = {"foreach", "maximize", "capturable", "differentiable", "fused",
                        "params", "initial_lr", "backend"}
def advanced(optimizer) -> set[str]:
    """The hyperparameters shown folded under "more": those the optimizer's transforms
    (or, for the optimizers that are not chains, its class) call advanced."""
    transform = getattr(optimizer, "transform", None)
    return set(getattr(transform, "advanced", None) or getattr(type(optimizer), "advanced", ()))
# Schedules offered for the learning rate: pure functions of the step with number args.
LR_SCHEDULES = ("cosine", "cyclical", "exponential", "inverse_time", "linear_to",
                "step_decay", "triangular")


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, tuple):
        v = list(v)
    return v


# ------------------------------------------------------------------ optimizers

def optimizer_factories() -> dict[str, Any]:
    """Name -> factory ``f(params, **hyper)`` of every ``descend.optim.OPTIMIZERS`` entry."""
    return {name: optim.OPTIMIZERS.get(name) for name in optim.OPTIMIZERS.names()}


def optimizer_specs() -> list[dict[str, Any]]:
    """For each optimizer: name, first doc line, hyperparameters with their defaults, and
    ``race``: whether it runs on the race's single 2-D parameter (not the layer-wise
    methods of ``descend.optim.LAYERWISE``: K-FAC, Shampoo, LARS, LAMB, Hessian-free).

    The defaults are read from the param group of an optimizer built on a dummy
    parameter, so presets of registry entries (``momentum=0.9`` of ``nesterov``) show
    (SAM: over its default base, SGD, whose fields it shows).
    """
    specs = []
    for name, f in sorted(optimizer_factories().items()):
        probe = [torch.zeros(1, requires_grad=True)]
        try:
            opt = f(probe)
        except (TypeError, ValueError):  # an optimizer without a default lr
            opt = f(probe, lr=0.01)
        group, folded = opt.param_groups[0], advanced(opt)
        hyper = [{"name": k, "default": _jsonable(v), "advanced": k in folded}
                 for k, v in group.items() if k not in _IMPLEMENTATION_ARGS]
        hyper.sort(key=lambda h: (h["advanced"], h["name"] != "lr"))
        doc = (inspect.getdoc(f) or "").splitlines()
        specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": hyper,
                      "race": name not in optim.LAYERWISE})
    return specs


def race_optimizer_names() -> list[str]:
    """The optimizers the race offers: every registry entry but ``descend.optim.LAYERWISE``."""
    return sorted(n for n in optimizer_factories() if n not in optim.LAYERWISE)


def create_optimizer(name: str, params, hyper: dict[str, Any]):
    """Build optimizer ``name`` over ``params`` with keyword hyperparameters ``hyper``.

    Every numeric hyperparameter must be finite (checked here); ranges and unknown
    keywords are checked by ``descend.optim.create``.
    """
    factories = optimizer_factories()
    check_choice("optimizer", name, sorted(factories))
    for k, v in hyper.items():
        for i, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                check_real(k if not isinstance(v, (list, tuple)) else f"{k}[{i}]", x)
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
    return optim.create(name, list(params), **hyper)


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
    for name in LR_SCHEDULES:
        if name in schedules.SCHEDULES:
            f = schedules.SCHEDULES.get(name)
            doc = (inspect.getdoc(f) or "").splitlines()
            specs.append({"name": name, "doc": doc[0] if doc else "", "hyper": _arg_spec(f)})
    return specs


def attach_schedule(optimizer, name: str, hyper: dict[str, Any]):
    """A ``descend.schedules.Scheduler`` driving ``lr`` of ``optimizer`` (``None`` for none)."""
    check_choice("schedule", name, [s["name"] for s in schedule_specs()])
    if name == "none":
        return None
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if "e0" not in hyper and "e0" in inspect.signature(schedules.SCHEDULES.get(name)).parameters:
        hyper["e0"] = float(optimizer.param_groups[0]["lr"])
    return schedules.Scheduler(optimizer, {"lr": schedules.SCHEDULES.create(name, **hyper)})


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

MAX_CLASSES = 8


def make_dataset(name: str, *, n: int, noise: float, classes: int, test_fraction: float, seed: int):
    """``(x_train, y_train, x_test, y_test)`` of a ``descend.data`` toy2d set of ``classes`` classes."""
    from descend.data import load

    d = load("toy2d", kind=name, n_samples=n, noise=noise, classes=classes, data_seed=seed,
             test_fraction=test_fraction, val_fraction=0.0)
    return (*d.train.tensors, *d.test.tensors)


def dataset_names() -> list[str]:
    """The names of the 2-D toy datasets the playground offers."""
    from descend.data.toy2d import KINDS

    return list(KINDS)


_CLASSES: dict[str, int] = {}


def max_classes(kind: str) -> int:
    """The most classes toy2d ``kind`` makes here: ``MAX_CLASSES`` if it takes a class count, else 2.

    Asked of ``descend.data`` itself (a 3-class set of 10 points either loads or is refused).
    """
    if kind not in _CLASSES:
        try:
            make_dataset(kind, n=10, noise=0.0, classes=3, test_fraction=0.5, seed=0)
            _CLASSES[kind] = MAX_CLASSES
        except ValueError:
            _CLASSES[kind] = 2
    return _CLASSES[kind]


ACTIVATIONS = NN_ACTIVATIONS.names()
# Norms of the fully connected mlp that need no extra setting ("group" needs a width
# divisible by its group count, "instance" needs spatial dimensions).
NORMS = ("none", "batch", "layer", "weight", "spectral")


def build_mlp(hidden: list[int], activation: str, norm: str, dropout: float, *, classes: int = 2,
              residual: bool = False) -> nn.Module:
    """``descend.nn.MODELS.create("mlp", input_shape=(2,), num_classes=classes, ...)``.

    Each hidden layer: Linear -> [norm] -> activation -> [dropout]; with ``residual``
    every hidden layer after the first is a two-layer residual block.
    """
    check_choice("norm", norm, NORMS)
    return MODELS.create("mlp", input_shape=(2,), num_classes=classes, hidden=list(hidden),
                         activation=activation, norm=None if norm == "none" else norm,
                         dropout=dropout, residual=residual)


def init_schemes() -> list[str]:
    """Every ``descend.init.INITIALIZERS`` scheme once (aliases left out), then lsuv and fixup."""
    by_factory: dict[Any, list[str]] = {}
    for name in dinit.INITIALIZERS.names():
        by_factory.setdefault(dinit.INITIALIZERS.get(name), []).append(name)
    names = []
    for f, aliases in by_factory.items():
        own = f.__name__.rstrip("_")
        names.append(own if own in aliases else aliases[0])
    return sorted(names) + ["lsuv", "fixup"]


def initialize(model: nn.Module, scheme: str, *, batch: torch.Tensor,
               generator: torch.Generator) -> nn.Module:
    """Initialize ``model`` with ``descend.init`` scheme ``scheme``, drawing from ``generator``.

    - ``lsuv``: ``descend.init.lsuv(model, batch, generator=generator)``, ``batch`` being
      the training inputs;
    - ``sparse``: ``descend.init.apply`` one Linear layer at a time with
      ``k = min(15, fan_in)`` (a first layer with 2 inputs cannot have 15 non-zero
      incoming weights);
    - every other scheme (``fixup`` included): ``descend.init.apply(model, scheme,
      generator=generator)`` (weights by the scheme, biases 0, norm scale 1 / shift 0).
    """
    check_choice("init", scheme, init_schemes())
    if scheme == "lsuv":
        return dinit.lsuv(model, batch, generator=generator)
    if scheme == "sparse":
        k = inspect.signature(dinit.INITIALIZERS.get("sparse")).parameters["k"].default
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                dinit.apply(model, "sparse", generator=generator, pattern=f"^{re.escape(name)}$",
                            k=min(k, m.in_features))
        return model
    return dinit.apply(model, scheme, generator=generator)


def backends() -> dict[str, str]:
    """Which module provides each part (shown on the page's footer)."""
    return {
        "optimizers": "descend.optim",
        "schedules": "descend.schedules",
        "surfaces": "descend.analysis.testfunctions",
        "datasets": "descend.data (toy2d)",
        "models": "descend.nn.MODELS (mlp)",
        "init": "descend.init",
    }
