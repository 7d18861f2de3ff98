"""descend: the toolbox of optimization for deep learning, on PyTorch.

Subpackages are imported on demand (``import descend.optim``), so that
``import descend`` stays cheap.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

_SUBMODULES = {
    "optim", "schedules", "init", "nn", "losses", "regularize", "data", "train",
    "ensemble", "analysis", "experiments",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return _import_module(f"descend.{name}")
    raise AttributeError(f"module 'descend' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
