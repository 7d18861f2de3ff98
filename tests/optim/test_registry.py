"""Invariants every registered optimizer must satisfy: one registry entry buys them all."""

import io

import pytest
import torch

import descend.optim as do
from descend.optim import OPTIMIZERS

# name -> (kwargs on the quadratic, kwargs on Rosenbrock, bound on Rosenbrock after 1500 steps)
# Rosenbrock starts at f = 4 from (-1, 1); the quadratic at f = 1.5 and must reach 1e-8
# in 300 steps (AdaDelta, whose steps start at sqrt(eps), only 5e-2).
CONFIG = {
    "sgd": (dict(lr=0.3), dict(lr=2e-3), 0.05),
    "momentum": (dict(lr=0.1), dict(lr=1e-3), 1e-5),
    "momentum_textbook": (dict(lr=0.1), dict(lr=1e-3), 1e-5),
    "nesterov": (dict(lr=0.1), dict(lr=1e-3), 1e-5),
    "nesterov_lookahead": (dict(lr=0.1), dict(lr=1e-3), 1e-5),
    "adagrad": (dict(lr=0.5), dict(lr=0.3), 0.05),
    "rmsprop": (dict(lr=0.01), dict(lr=3e-3), 0.02),
    "rmsprop_nesterov": (dict(lr=0.01), dict(lr=1e-4), 0.3),
    "adadelta": (dict(lr=1.0), dict(lr=1.0), 1.0),
    "adam": (dict(lr=0.05), dict(lr=0.02), 1e-3),
    "adamw": (dict(lr=0.05, weight_decay=0.0), dict(lr=0.02, weight_decay=0.0), 1e-3),
}
# Entries that are not elementwise chains (second order, K-FAC, Shampoo, LARS, LAMB, SAM)
# take other arguments and most need step(closure): test_structured_registry.py runs
# these invariants on them.
from structured_cases import CONFIG as STRUCTURED  # noqa: E402

NAMES = [n for n in OPTIMIZERS.names() if n not in STRUCTURED]


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def quadratic(x):
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=x.dtype)
    return 0.5 * x @ a @ x


def minimise(name, f, steps, **kwargs):
    x = torch.nn.Parameter(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    opt = do.create(name, [x], **kwargs)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = f(x)
            loss.backward()
            return loss
        opt.step(closure)
    return float(f(x.detach()))


def test_every_entry_has_a_convergence_setting_and_rows_in_the_case_table():
    from cases import CASES
    assert set(NAMES) == set(CONFIG), "add the new optimizer to CONFIG"
    assert set(NAMES) == {name for name, _ in CASES}, "add the new optimizer to tests/optim/cases.py"
    for name in ["sgd", "momentum", "momentum_textbook", "nesterov", "nesterov_lookahead",
                 "adagrad", "rmsprop", "rmsprop_nesterov", "adadelta", "adam", "adamw"]:
        assert name in OPTIMIZERS


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_quadratic(name):
    tol = 5e-2 if name == "adadelta" else 1e-8
    assert minimise(name, quadratic, 300, **CONFIG[name][0]) < tol


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_rosenbrock(name):
    _, kwargs, tol = CONFIG[name]
    assert minimise(name, rosenbrock, 1500, **kwargs) < tol


def _model_params(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
            for s in [(4, 3), (3,), (2, 1, 2)]]


def _loss(params, t):
    return sum(((p.double() - 0.1 * t) ** 2).sum() + (p.double() ** 4).sum() * 0.1
               for p in params)


def _run(opt, params, t0, t1):
    for t in range(t0, t1):
        def closure(t=t):
            opt.zero_grad()
            loss = _loss(params, t)
            loss.backward()
            return loss
        opt.step(closure)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_continuation(name):
    kwargs = dict(CONFIG[name][0], grad_noise=1e-3, clip_norm=5.0)
    torch.manual_seed(3)
    a = _model_params()
    opt_a = do.create(name, a, **kwargs)
    _run(opt_a, a, 0, 10)
    torch.manual_seed(3)
    b = _model_params()
    opt_b = do.create(name, b, **kwargs)
    _run(opt_b, b, 0, 5)
    buf = io.BytesIO()
    torch.save(opt_b.state_dict(), buf)
    rng = torch.get_rng_state()
    c = [torch.nn.Parameter(p.detach().clone()) for p in b]
    opt_c = do.create(name, c, lr=123.0)  # hyperparameters come back from the state dict
    buf.seek(0)
    opt_c.load_state_dict(torch.load(buf))
    torch.set_rng_state(rng)
    _run(opt_c, c, 5, 10)
    for pa, pc in zip(a, c):
        assert torch.equal(pa, pc)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_kept(name, dtype):
    params = _model_params(dtype)
    opt = do.create(name, params, **CONFIG[name][0])
    _run(opt, params, 0, 3)
    for p in params:
        assert p.dtype == dtype and torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and key != "step":
                assert value.dtype == dtype, key


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_and_missing_grads(name):
    a, b, c = _model_params()
    b0, c0 = b.detach().clone(), c.detach().clone()
    opt = do.create(name, [{"params": [a]}, {"params": [b], "lr": 0.0}], **CONFIG[name][0])
    opt.add_param_group({"params": [c]})
    assert opt.param_groups[1]["lr"] == 0.0
    assert set(opt.param_groups[2]) == set(opt.param_groups[0])
    a0 = a.detach().clone()

    def closure():
        opt.zero_grad()
        loss = _loss([a, b], 0)  # c gets no gradient
        loss.backward()
        return loss
    opt.step(closure)
    assert c.grad is None and torch.equal(c, c0) and not opt.state[c]
    assert torch.equal(b, b0)
    assert not torch.equal(a, a0)
    with pytest.raises(ValueError, match=r"`lr` must be >= 0. Received: lr=-1"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -1})
    # a key the math does not read is kept in the group and ignored, as torch does
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "colour": "red"})
    assert opt.param_groups[-1]["colour"] == "red"


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_rejects_bad_lr_and_unknown_keywords(name):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"^`lr` must be >= 0. Received: lr=-1$"):
        do.create(name, p, lr=-1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): bogus. Received: bogus=3"):
        do.create(name, p, bogus=3)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Received: optimizer='adamm' Did you mean 'adam'\?"):
        do.create("adamm", [torch.nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize("name", NAMES)
def test_odd_parameters_empty_scalar_and_strided(name):
    """Empty, 0-d and non-contiguous parameters step like their contiguous copies."""
    base = torch.randn(3, 4, dtype=torch.float64)
    odd = [torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
           torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64)),
           torch.nn.Parameter(base.t())]
    plain = [torch.nn.Parameter(p.detach().clone().contiguous()) for p in odd]
    for params in (odd, plain):
        opt = do.create(name, params, **CONFIG[name][0])
        _run(opt, params, 0, 4)
    assert not odd[2].is_contiguous()
    for a, b in zip(odd, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_tensor_learning_rate_equals_float(name):
    kwargs = dict(CONFIG[name][0])
    lr = kwargs.pop("lr")
    results = []
    for value in (lr, torch.tensor(lr, dtype=torch.float64)):
        params = _model_params()
        _run(do.create(name, params, lr=value, **kwargs), params, 0, 4)
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_runs_with_every_extra(name):
    """All cross-cutting keywords at once; the proximal L1 zeroes a weight with no signal."""
    w = torch.nn.Parameter(torch.tensor([0.02, 3.0], dtype=torch.float64))
    kwargs = dict(CONFIG[name][0], clip_value=10.0, clip_norm=5.0, grad_noise=1e-6,
                  weight_decay=1e-3, decoupled_weight_decay=True, l1=20.0, l1_mode="proximal",
                  maximize=False)
    opt = do.create(name, [w], **kwargs)
    for _ in range(3):
        def closure():
            opt.zero_grad()
            loss = (w[1] - 3.0) ** 2  # w[0] gets a zero gradient
            loss.backward()
            return loss
        opt.step(closure)
    assert w[0].item() == 0.0 and torch.isfinite(w).all()
    assert opt.state[w]["step"].item() == 3
