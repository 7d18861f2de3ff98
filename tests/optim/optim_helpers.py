"""Small float64 problems and a trajectory recorder shared by the optimizer tests."""

from __future__ import annotations

import torch


def make_params(dtype=torch.float64, seed=0):
    """A matrix, a vector and a scalar parameter (dense, of several shapes)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), ()]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
            for s in shapes]


def loss_fn(params, t=0):
    """A smooth non-quadratic loss whose gradient changes with the step t."""
    w, b, c = params
    x = torch.linspace(-1, 1, 4, dtype=w.dtype) * (1 + 0.1 * (t % 3))
    y = torch.tanh(w @ x + 0.5) + 0.3 * b.sum() * c
    return (y ** 2).sum() + 0.1 * (b ** 4).sum() + (c - 0.7) ** 2 + 0.05 * (w ** 2).sum()


def trajectory(make_opt, steps=12, dtype=torch.float64, seed=0, closure=False, on_step=None):
    """Parameters after each step (list of flat copies)."""
    params = make_params(dtype, seed)
    opt = make_opt(params)
    out = []
    for t in range(steps):
        def closure_fn(t=t):
            opt.zero_grad()
            loss = loss_fn(params, t)
            loss.backward()
            return loss
        if closure:
            opt.step(closure_fn)
        else:
            closure_fn()
            opt.step()
        if on_step is not None:
            on_step(opt, t)
        out.append(torch.cat([p.detach().reshape(-1).clone() for p in params]))
    return torch.stack(out)
