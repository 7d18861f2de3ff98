"""Registry entries that are not chains of elementwise transforms (second-order, Kronecker
factored, layer-wise and SAM): how each is run by the invariant tests of
test_structured_registry.py. test_registry.py leaves these names to that file."""

from __future__ import annotations

import torch
from torch import nn

# name -> settings:
#   quad:  kwargs for the 2-D quadratic (must reach 1e-8 in 300 steps, like test_registry)
#   rosen: (kwargs, steps, bound) on Rosenbrock from (-1, 1) (f = 4 there)
#   net:   kwargs for the small conv net of `net_problem`
#   trainer: kwargs for the Trainer test's MLP (default: net)
#   one_group: the method takes one direction over all parameters (a second group is refused)
CONFIG = {
    "newton": dict(quad={}, rosen=({}, 20, 1e-12), net={"damping": 10.0}, one_group=True),
    "newton_saddle_free": dict(quad={}, rosen=({"damping": 1e-3}, 30, 1e-10),
                               net={"damping": 1.0, "lr": 0.5}, one_group=True),
    "cg": dict(quad={"max_iter": 1}, rosen=({"max_iter": 1}, 300, 1e-10), net={"max_iter": 2},
               one_group=True),
    "bfgs": dict(quad={"max_iter": 1}, rosen=({"max_iter": 1}, 100, 1e-10), net={"max_iter": 2},
                 one_group=True),
    "lbfgs": dict(quad={"max_iter": 1, "max_eval": 10, "line_search_fn": "strong_wolfe"},
                  rosen=({"max_iter": 1, "max_eval": 10, "line_search_fn": "strong_wolfe"}, 100, 1e-9),
                  net={"max_iter": 2, "line_search_fn": "strong_wolfe"}, one_group=True),
    "hessian_free": dict(quad={"curvature": "hessian", "damping": 1e-3},
                         rosen=({"curvature": "hessian", "damping": 1e-2}, 100, 1e-10),
                         net={"damping": 0.1}, one_group=True),
    "kfac": dict(quad={"lr": 0.1, "momentum": 0.5}, rosen=({"lr": 1e-3}, 1500, 1e-4),
                 net={"lr": 0.05, "damping": 0.1}, one_group=False),
    "shampoo": dict(quad={"lr": 0.5}, rosen=({"lr": 0.3}, 1500, 0.05), net={"lr": 0.05},
                    one_group=False),
    "lars": dict(quad={"lr": 0.1, "momentum": 0.5}, rosen=({"lr": 1e-3}, 1500, 1e-4),
                 net={"lr": 1.0}, trainer={"lr": 1.0, "trust_coefficient": 0.02}, one_group=False),
    "lamb": dict(quad={"lr": 0.05, "weight_decay": 0.0}, rosen=({"lr": 0.02, "weight_decay": 0.0}, 1500, 5e-3),
                 net={"lr": 0.01}, trainer={"lr": 0.05}, one_group=False),
    "sam": dict(quad={"lr": 0.3, "rho": 1e-5}, rosen=({"lr": 2e-3, "rho": 1e-3, "base": "momentum"}, 1500, 1e-3),
                net={"lr": 0.1, "rho": 0.05, "base": "momentum"}, one_group=False),
}


def net_problem(dtype=torch.float64, seed=0):
    """A small conv net (Conv1d -> ReLU -> Linear, 1-D parameters included) and a fixed
    regression batch: ``(model, loss_fn)`` with ``loss_fn()`` the mean squared error."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 6, 2)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    x = torch.randn(16, 1, 6, generator=g, dtype=dtype)
    y = torch.randn(16, 2, generator=g, dtype=dtype)

    def loss_fn():
        return nn.functional.mse_loss(model(x), y)
    return model, loss_fn
