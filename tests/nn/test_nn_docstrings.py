"""The runnable examples in the docstrings of descend.nn, descend.init and descend.losses."""

import doctest
import importlib

import pytest

MODULES = ["descend.nn.activations", "descend.nn.layers", "descend.nn.folding", "descend.nn.models",
           "descend.nn.normalization", "descend.init.schemes", "descend.init.rules", "descend.init.data_driven",
           "descend.losses"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
