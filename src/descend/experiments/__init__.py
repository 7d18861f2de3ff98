"""Experiments: recipes (YAML), the compare runner, plots and the HTML report.

``descend compare [RECIPE]`` trains every variant of a recipe over several seeds and
writes ``runs/<name>/`` (with ``--tune``: after an equal tuning budget per variant; with
``--suite``: over a suite of workloads); ``descend train RECIPE`` trains one variant.
From Python, :func:`compare` and :func:`train` do the same:

>>> from descend.experiments import load
>>> [run.name for run in load("default").runs()]
['sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam']
"""

from descend.experiments.recipe import Recipe, RecipeError, Run, RunSpec, bundled_names, load

__all__ = ["Recipe", "RecipeError", "Run", "RunSpec", "bundled_names", "load", "compare", "train"]


def compare(*args, **kwargs):
    """Run a comparison; see :func:`descend.experiments.commands.compare`."""
    from descend.experiments.commands import compare as _compare
    return _compare(*args, **kwargs)


def train(*args, **kwargs):
    """Train one variant of a recipe; see :func:`descend.experiments.commands.train`."""
    from descend.experiments.commands import train as _train
    return _train(*args, **kwargs)
