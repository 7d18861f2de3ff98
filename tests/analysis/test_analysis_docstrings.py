import doctest
import importlib

import pytest

MODULES = ["descend.analysis.testfunctions", "descend.analysis.trajectories", "descend.analysis.hessian",
           "descend.analysis.landscape", "descend.analysis.connectivity", "descend.analysis.lottery",
           "descend.analysis.doctor", "descend.analysis.reproduce", "descend.train.monitors"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
