"""Trajectories equal to torch.optim (float64, rtol 1e-10) for every case of the table
that torch computes (the cases whose transforms say they are one of torch's algorithms)."""

import inspect

import pytest
import torch

from cases import CASES, IDS, make, torch_class
from optim_helpers import loss_fn, make_params, trajectory

TORCH_CASES = [(c, i) for c, i in zip(CASES, IDS) if torch_class(c) is not None]


def _torch_kwargs(case):
    opt = make(case, [torch.nn.Parameter(torch.zeros(1))])
    cls = torch_class(case)
    names = inspect.signature(cls).parameters
    return {k: v for k, v in opt.param_groups[0].items() if k in names and k != "params"}


def test_the_table_has_torch_cases_for_each_of_torchs_algorithms():
    names = {torch_class(c).__name__ for c, _ in TORCH_CASES}
    assert names == {"SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", [c for c, _ in TORCH_CASES], ids=[i for _, i in TORCH_CASES])
def test_trajectory_equals_torch(case, foreach):
    ours = trajectory(lambda p: make(case, p))
    cls = torch_class(case)
    ref = trajectory(lambda p: cls(p, foreach=foreach, **_torch_kwargs(case)))
    assert not torch.equal(ours[0], ours[-1])  # it moved
    assert torch.isfinite(ours).all(), "the case diverges: choose a smaller lr"
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [
    ("momentum", {}), ("adagrad", dict(lr=0.1)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True)), ("adadelta", dict()),
    ("adam", dict(lr=0.05, amsgrad=True)), ("adamw", dict(lr=0.05)),
])
def test_state_dict_loads_both_ways(name, kwargs):
    """A torch checkpoint continues in descend, and a descend one in torch, identically."""
    case = (name, kwargs)
    cls = torch_class(case)
    tkw = _torch_kwargs(case)

    def run(first, second, steps=6):
        params = make_params()
        o1 = first(params)
        for t in range(steps):
            o1.zero_grad()
            loss_fn(params, t).backward()
            o1.step()
        o2 = second(params)
        o2.load_state_dict(o1.state_dict())
        for t in range(steps, 2 * steps):
            o2.zero_grad()
            loss_fn(params, t).backward()
            o2.step()
        return torch.cat([p.detach().reshape(-1) for p in params]), o2

    ours = lambda p: make(case, p)  # noqa: E731
    theirs = lambda p: cls(p, **tkw)  # noqa: E731
    ref, _ = run(theirs, theirs)
    mixed1, o = run(theirs, ours)
    mixed2, _ = run(ours, theirs)
    torch.testing.assert_close(mixed1, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixed2, ref, rtol=1e-10, atol=1e-12)
    keys = set().union(*(s.keys() for s in o.state_dict()["state"].values()))
    expected = {"SGD": {"momentum_buffer"}, "Adagrad": {"step", "sum"},
                "RMSprop": {"step", "square_avg", "momentum_buffer", "grad_avg"},
                "Adadelta": {"step", "square_avg", "acc_delta"},
                "Adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
                "AdamW": {"step", "exp_avg", "exp_avg_sq"}}[cls.__name__]
    assert keys == expected
