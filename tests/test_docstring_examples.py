"""Every module of descend: its docstring examples run and give what they show, and every public
function and class defined in it has a docstring."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import descend
import descend.io
from descend._extras import MissingExtra

MODULES = sorted(m.name for m in pkgutil.walk_packages(descend.__path__, "descend.")
                 if m.name != "descend.__main__")


def _import(name):
    """The module, or a skip when it needs an extra that is not installed."""
    try:
        return importlib.import_module(name)
    except MissingExtra as e:
        pytest.skip(str(e))


def public_objects(module):
    """The functions and classes defined in ``module`` whose names do not start with ``_``."""
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:
            yield name, obj


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch, tmp_path):
    monkeypatch.setattr(descend.io, "FSYNC", False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = _import(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.parametrize("name", MODULES)
def test_public_objects_have_docstrings(name):
    module = _import(name)
    missing = [n for n, obj in public_objects(module) if not (obj.__doc__ or "").strip()]
    assert not missing, f"{name}: no docstring on {', '.join(missing)}"
