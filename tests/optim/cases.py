"""The optimizer cases of the tests: one table that feeds the registry, torch-parity and
backend tests. Each row is a registry name and keyword arguments; the backends a case
runs on are taken from the dispatcher (every backend that can compute it), and the torch
optimizer it is compared with from what its transforms say they are in torch.

Adding an optimizer: its registry line, and a row here (more rows for its options)."""

from __future__ import annotations

import torch

import descend.optim as do
from descend.optim import backends

# (registry name, kwargs): every registry optimizer, and the options of each
CASES = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("momentum", dict(lr=0.05, dampening=0.1, weight_decay=0.01)),
    ("momentum", dict(lr=0.05, dampening=0.3)),
    ("momentum", dict(lr=0.01, momentum=0.5, weight_decay=0.1)),
    ("nesterov", dict(lr=0.01, maximize=True)),   # small: maximizing the b**4 term diverges
    ("nesterov", dict(lr=0.01, momentum=0.5, weight_decay=0.1)),
    ("momentum_textbook", dict(lr=0.05)),
    ("momentum_textbook", dict(lr=0.05, nesterov=True)),
    ("momentum", dict(lr=0.05, l1=0.01, l1_mode="proximal", clip_value=1.0)),
    ("nesterov_lookahead", dict(lr=0.05)),
    ("adagrad", dict(lr=0.1)),
    ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, eps=1e-8,
                     maximize=True)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, weight_decay=0.1, maximize=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, momentum=0.8)),
    ("rmsprop", dict(lr=0.01, centered=True)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, maximize=True)),
    ("rmsprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1, eps=1e-6)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, dampening=0.3, maximize=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.95, momentum=0.9, momentum_form="textbook")),
    ("rmsprop", dict(lr=0.01, centered=True, eps_root=1e-8, weight_decay=0.1,
                     decoupled_weight_decay=True)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, nesterov=True, centered=True, weight_decay=0.1,
                     decoupled_weight_decay=True, maximize=True)),
    ("rmsprop_nesterov", dict(lr=0.01)),
    ("rmsprop_nesterov", dict(lr=0.01, lookahead=True)),
    ("adadelta", dict()),
    ("adadelta", dict(lr=1.0, weight_decay=0.01)),
    ("adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1, maximize=True)),
    ("adadelta", dict(lr=0.5, weight_decay=0.1, decoupled_weight_decay=True)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, maximize=True)),
    ("adam", dict(lr=0.05, weight_decay=0.1)),
    ("adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("adam", dict(lr=0.01, eps_root=1e-8, l1=0.001)),
    ("adam", dict(lr=0.01, clip_norm=0.5, grad_noise=1e-3, weight_decay=0.1,
                  weight_decay_exclude="bias_and_norm")),
    ("adamw", dict(lr=0.05)),
    ("adamw", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def make(case, params, backend="auto", **more):
    name, kwargs = case
    return do.create(name, params, backend=backend, **{**kwargs, **more})


def backends_for(case, dtype=torch.float64) -> list[str]:
    """The backends the dispatcher can run ``case`` on (besides "reference" and "auto")."""
    probe = [torch.nn.Parameter(torch.zeros(3, dtype=dtype))]
    opt = make(case, probe)
    out = []
    for b in backends.BACKENDS:
        if b in ("auto", "reference"):
            continue
        if backends.choose(opt.transform, {**opt.param_groups[0], "backend": b}, probe)[0]:
            out.append(b)
    return out


def torch_class(case):
    """torch.optim's class that computes ``case`` (same name as descend's), or None."""
    probe = [torch.nn.Parameter(torch.zeros(3))]
    opt = make(case, probe)
    if backends.torch_config(opt.transform, opt.param_groups[0])[0] is None:
        return None
    return getattr(torch.optim, type(opt).__name__, None)


def needs_closure(case) -> bool:
    return bool(make(case, [torch.nn.Parameter(torch.zeros(1))]).param_groups[0].get("lookahead"))
