"""Trajectories equal to torch.optim (float64, rtol 1e-10) for every option torch shares."""

import pytest
import torch

import descend.optim as do
from optim_helpers import loss_fn, make_params, trajectory

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.01, momentum=0.5, nesterov=True, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, eps=1e-8)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.8)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
    ("Adadelta", dict(lr=0.5, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_trajectory_equals_torch(name, kwargs, foreach):
    ours = trajectory(lambda p: getattr(do, name)(p, foreach=foreach, **kwargs))
    ref = trajectory(lambda p: getattr(torch.optim, name)(p, foreach=foreach, **kwargs))
    assert not torch.equal(ours[0], ours[-1])  # it moved
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9)), ("Adagrad", dict(lr=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)), ("Adadelta", dict()),
    ("Adam", dict(lr=0.05, amsgrad=True)), ("AdamW", dict(lr=0.05)),
])
def test_state_dict_loads_both_ways(name, kwargs):
    """A torch checkpoint continues in descend, and a descend one in torch, identically."""
    def run(first, second, steps=6):
        params = make_params()
        o1 = first(params, **kwargs)
        for t in range(steps):
            o1.zero_grad()
            loss_fn(params, t).backward()
            o1.step()
        o2 = second(params, **kwargs)
        o2.load_state_dict(o1.state_dict())
        for t in range(steps, 2 * steps):
            o2.zero_grad()
            loss_fn(params, t).backward()
            o2.step()
        return torch.cat([p.detach().reshape(-1) for p in params]), o2

    ours, torch_cls = getattr(do, name), getattr(torch.optim, name)
    ref, _ = run(torch_cls, torch_cls)
    mixed1, o = run(torch_cls, ours)
    mixed2, _ = run(ours, torch_cls)
    torch.testing.assert_close(mixed1, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixed2, ref, rtol=1e-10, atol=1e-12)
    keys = set().union(*(s.keys() for s in o.state_dict()["state"].values()))
    expected = {"SGD": {"momentum_buffer"}, "Adagrad": {"step", "sum"},
                "RMSprop": {"step", "square_avg", "momentum_buffer", "grad_avg"},
                "Adadelta": {"step", "square_avg", "acc_delta"},
                "Adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
                "AdamW": {"step", "exp_avg", "exp_avg_sq"}}[name]
    assert keys == expected
