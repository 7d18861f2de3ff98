"""Analysis: loss landscapes, mode connectivity, Hessian sharpness, lottery tickets,
2-D test functions and optimizer trajectories, the training doctor and ``reproduce``.

Submodules are imported lazily by their users; the names below are the public API.
"""

from descend.analysis.connectivity import BezierCurve, barrier, path_losses, train_bezier
from descend.analysis.hessian import HessianOperator, hessian_trace, lanczos, model_loss, top_eigenvalues
from descend.analysis.landscape import (evaluate, filter_normalized_direction, get_vector,
                                        loss_along_line, loss_surface_2d, plot_lines, plot_surface,
                                        set_vector)
from descend.analysis.lottery import (MaskGradients, apply_masks, iterative_magnitude_pruning,
                                      magnitude_masks, prunable, rewind, sparsity_of)
from descend.analysis.testfunctions import TEST_FUNCTIONS, TestFunction, parse_expression
from descend.analysis.trajectories import animate_trajectories, plot_trajectories, race, run_trajectory

__all__ = [
    "BezierCurve", "barrier", "path_losses", "train_bezier",
    "HessianOperator", "hessian_trace", "lanczos", "model_loss", "top_eigenvalues",
    "evaluate", "filter_normalized_direction", "get_vector", "loss_along_line",
    "loss_surface_2d", "plot_lines", "plot_surface", "set_vector",
    "MaskGradients", "apply_masks", "iterative_magnitude_pruning", "magnitude_masks",
    "prunable", "rewind", "sparsity_of",
    "TEST_FUNCTIONS", "TestFunction", "parse_expression",
    "animate_trajectories", "plot_trajectories", "race", "run_trajectory",
]
