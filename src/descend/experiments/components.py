"""Any optimizer in a recipe: a registry name or the import path of a ``torch.optim.Optimizer``.

``optimizer: {name: adam, lr: 0.001}`` builds descend's registry entry
(:func:`descend.optim.create`); a name with a dot or a colon is an import path:

* ``torch.optim.NAdam`` or ``torch.optim:NAdam`` (module, then the class),
* ``pytorch_optimizer:Lion`` (an optional package: ``pip install 'descend[contenders]'``),
* ``my_package.my_module:MyOptimizer`` (your own, importable from where you run).

The class must be a subclass of ``torch.optim.Optimizer``; the recipe's keyword arguments
are checked against its constructor's signature before anything trains (unknown and
missing arguments are errors naming the field, with the accepted names). LR schedulers
by import path work the same way in ``schedule: {lr: {name:
torch.optim.lr_scheduler.CosineAnnealingLR, T_max: 500}}`` (a subclass of
``torch.optim.lr_scheduler.LRScheduler`` or ``ReduceLROnPlateau``, built as
``cls(optimizer, **kwargs)``, stepped every step or every epoch as ``schedule_unit``
says).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

import torch

from descend._validation import fail


def is_import_path(name: Any) -> bool:
    """True for ``pkg.mod.Class`` / ``pkg.mod:Class``; False for a registry name.

    >>> is_import_path("torch.optim.NAdam"), is_import_path("pytorch_optimizer:Lion"), is_import_path("adam")
    (True, True, False)
    """
    return isinstance(name, str) and ("." in name or ":" in name)


_HINTS = {"pytorch_optimizer": "pip install pytorch-optimizer (or pip install 'descend[contenders]')",
          "heavyball": "pip install heavyball"}


def resolve(path: str, kind: str = "optimizer", base: type = torch.optim.Optimizer) -> type:
    """The class named by an import path, checked to be a subclass of ``base``.

    Args:
        path: ``"module:Class"`` or ``"module.Class"`` (also nested: ``"mod:Outer.Inner"``).
        kind: the word errors use (``"optimizer"``, ``"schedule"``).
        base: the required base class (or a tuple of them).

    Example:
        >>> resolve("torch.optim.NAdam").__name__, resolve("torch.optim:SGD").__name__
        ('NAdam', 'SGD')
        >>> resolve("torch.nn.Linear")
        Traceback (most recent call last):
        TypeError: `optimizer` must be a subclass of torch.optim.optimizer.Optimizer. Received: optimizer='torch.nn.Linear'
    """
    if not isinstance(path, str) or not path.strip():
        fail(kind, "a registry name or an import path 'package.module:Class'", path, TypeError)
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        fail(kind, "an import path 'package.module:Class' or 'package.module.Class'", path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        top = module_name.split(".")[0]
        hint = f" ({_HINTS[top]})" if top in _HINTS else ""
        raise ImportError(f"`{kind}` must be importable: {e}{hint}. Received: {kind}={path!r}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean {module_name}:{close[0]}?" if close else ""
            raise AttributeError(f"`{kind}` must name a class that {module_name} defines (it has no "
                                 f"{part!r}).{hint} Received: {kind}={path!r}")
        obj = getattr(obj, part)
    bases = base if isinstance(base, tuple) else (base,)
    if not (inspect.isclass(obj) and issubclass(obj, bases)):
        want = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise TypeError(f"`{kind}` must be a subclass of {want}. Received: {kind}={path!r}")
    return obj


def check_arguments(cls: type, kwargs: dict[str, Any], *, skip: int = 1, kind: str = "optimizer") -> None:
    """Check ``kwargs`` against ``cls``'s constructor: no unknown names, nothing required missing.

    The first ``skip`` positional parameters (the parameters to optimize, or the
    optimizer of a scheduler) are supplied by descend. A constructor with ``**kwargs``
    accepts any name.

    Example:
        >>> check_arguments(torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.004})
        >>> check_arguments(torch.optim.NAdam, {"lrate": 0.01})
        Traceback (most recent call last):
        TypeError: `lrate` must be an argument of torch.optim.nadam.NAdam (accepted: betas, ..., lr, ...). Did you mean 'lr'? Received: lrate=0.01
    """
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return
    params = [p for p in sig.parameters.values() if p.name != "self"][skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        named = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    else:
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        for key, value in kwargs.items():
            if key not in named:
                close = difflib.get_close_matches(key, sorted(named), n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"`{key}` must be an argument of {cls.__module__}.{cls.__qualname__} "
                                f"(accepted: {', '.join(sorted(named))}).{hint} Received: {key}={value!r}")
    for p in params:
        if (p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in kwargs):
            raise TypeError(f"`{p.name}` is required by {cls.__module__}.{cls.__qualname__} and missing. "
                            f"Received: {kind} arguments {sorted(kwargs)}")


def create_optimizer(name: str, params, **kwargs) -> torch.optim.Optimizer:
    """An optimizer by registry name (:func:`descend.optim.create`) or by import path.

    Example:
        >>> w = [torch.nn.Parameter(torch.zeros(2))]
        >>> type(create_optimizer("torch.optim.NAdam", w, lr=0.01)).__name__
        'NAdam'
        >>> type(create_optimizer("adam", w, lr=0.01)).__module__
        'descend.optim.adaptive'
    """
    if not is_import_path(name):
        from descend import optim
        return optim.create(name, params, **kwargs)
    cls = resolve(name)
    check_arguments(cls, kwargs)
    return _named_errors(cls, lambda: cls(params, **kwargs), kwargs)


def _named_errors(cls: type, make, kwargs: dict[str, Any]):
    """``make()``; a ValueError/TypeError of another library's constructor that shows one
    argument's value is re-raised naming that argument (``"Invalid learning rate: -1.0"``
    becomes "`lr` is invalid for torch.optim.nadam.NAdam: Invalid learning rate: -1.0.
    Received: lr=-1.0")."""
    try:
        return make()
    except (ValueError, TypeError) as e:
        msg = str(e)
        hits = [k for k, v in kwargs.items() if k in msg or (not isinstance(v, bool) and str(v) in msg)]
        if len(hits) == 1 and f"`{hits[0]}`" not in msg:
            k = hits[0]
            raise type(e)(f"`{k}` is invalid for {cls.__module__}.{cls.__qualname__}: {msg}. "
                          f"Received: {k}={kwargs[k]!r}") from None
        raise


LR_SCHEDULER_BASES = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def create_lr_scheduler(name: str, optimizer: torch.optim.Optimizer, *, unit: str = "step", **kwargs):
    """A torch LR scheduler by import path, built on ``optimizer`` and labelled with ``unit``.

    The trainer steps it after every optimizer step (``unit="step"``) or every epoch
    (``"epoch"``; ``ReduceLROnPlateau`` is given the validation loss).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> s = create_lr_scheduler("torch.optim.lr_scheduler.StepLR", opt, step_size=2, gamma=0.5)
        >>> type(s).__name__, s.unit
        ('StepLR', 'step')
    """
    cls = resolve(name, "schedule", LR_SCHEDULER_BASES)
    check_arguments(cls, kwargs, kind="schedule")
    sched = _named_errors(cls, lambda: cls(optimizer, **kwargs), kwargs)
    sched.unit = unit
    return sched


__all__ = ["LR_SCHEDULER_BASES", "check_arguments", "create_lr_scheduler", "create_optimizer", "is_import_path",
           "resolve"]
