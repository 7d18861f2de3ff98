"""The examples in the docstrings of descend.optim run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["core", "momentum", "adaptive", "gradient", "decay", "__init__"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module("descend.optim" + ("" if name == "__init__" else f".{name}"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def test_public_names_have_docstrings():
    import descend.optim as do
    for name in do.__all__:
        obj = getattr(do, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
