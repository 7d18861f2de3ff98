"""Experiments: recipes (YAML), the compare runner, plots and the HTML report.

``descend compare [RECIPE]`` trains every variant of a recipe over several seeds and
writes ``runs/<name>/``; ``descend train RECIPE`` trains one variant. From Python:

>>> from descend.experiments import load
>>> [run.name for run in load("default").runs()]
['sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam']
"""

from descend.experiments.recipe import Recipe, RecipeError, Run, RunSpec, bundled_names, load

__all__ = ["Recipe", "RecipeError", "Run", "RunSpec", "bundled_names", "load", "compare"]


def compare(*args, **kwargs):
    """Run a comparison; see :func:`descend.experiments.commands.compare`."""
    from descend.experiments.commands import compare as _compare
    return _compare(*args, **kwargs)
