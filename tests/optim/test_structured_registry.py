"""Invariants of the registry entries that are not elementwise chains (Newton, CG, BFGS,
L-BFGS, Hessian-free, K-FAC, Shampoo, LARS, LAMB, SAM): the shared ones of
test_registry.py, run the way these methods are used (through ``step(closure)``, on a
small conv net as well as on the 2-D problems)."""

import io

import pytest
import torch

import descend.optim as do
from descend.optim import OPTIMIZERS
from structured_cases import CONFIG, net_problem

NAMES = sorted(CONFIG)


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


def run_net(opt, model, loss_fn, steps):
    losses = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss
        losses.append(float(opt.step(closure).detach()))
    return losses


def test_every_entry_is_configured_here_or_in_test_registry():
    import test_registry
    assert set(OPTIMIZERS.names()) == set(CONFIG) | set(test_registry.CONFIG)
    assert not set(CONFIG) & set(test_registry.CONFIG)
    assert do.LAYERWISE <= set(CONFIG)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_quadratic(name):
    assert minimise(name, quadratic, 300, **CONFIG[name]["quad"]) < 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_rosenbrock(name):
    kwargs, steps, bound = CONFIG[name]["rosen"]
    assert minimise(name, rosenbrock, steps, **kwargs) < bound


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_small_conv_net(name):
    model, loss_fn = net_problem()
    opt = do.create(name, model.parameters(), **CONFIG[name]["net"])
    losses = run_net(opt, model, loss_fn, 30)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert float(loss_fn().detach()) < 0.5 * losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_continuation(name):
    kwargs = CONFIG[name]["net"]
    model_a, loss_a = net_problem()
    opt_a = do.create(name, model_a.parameters(), **kwargs)
    run_net(opt_a, model_a, loss_a, 10)
    model_b, loss_b = net_problem()
    opt_b = do.create(name, model_b.parameters(), **kwargs)
    run_net(opt_b, model_b, loss_b, 5)
    buf = io.BytesIO()
    torch.save(opt_b.state_dict(), buf)
    model_c, loss_c = net_problem()
    model_c.load_state_dict(model_b.state_dict())
    opt_c = do.create(name, model_c.parameters(), **{**kwargs, "lr": 123.0})  # lr comes back
    buf.seek(0)
    opt_c.load_state_dict(torch.load(buf, weights_only=False))
    assert opt_c.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    run_net(opt_c, model_c, loss_c, 5)
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_kept(name, dtype):
    model, loss_fn = net_problem(dtype)
    opt = do.create(name, model.parameters(), **CONFIG[name]["net"])
    run_net(opt, model, loss_fn, 3)
    for p in model.parameters():
        assert p.dtype == dtype and torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                assert value.dtype == dtype, key


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_and_missing_grads(name):
    a, b, c = (torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in [(3, 2), (2,), (2, 2)])
    kwargs = CONFIG[name]["quad"]

    def loss_ab():
        return (a ** 2).sum() + ((b - 1) ** 2).sum() + (a.sum() * b.sum()) ** 2 * 0.1

    if CONFIG[name]["one_group"]:
        with pytest.raises(ValueError, match=r"^`params` must be a single parameter group .*"
                                             r"Received: params=('2 groups'|'add_param_group')$"):
            do.create(name, [{"params": [a]}, {"params": [b]}], **kwargs)
        opt = do.create(name, [a, b, c], **kwargs)
        with pytest.raises(ValueError, match="single parameter group"):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
        c0 = c.detach().clone()
    else:
        b0, c0 = b.detach().clone(), c.detach().clone()
        opt = do.create(name, [{"params": [a]}, {"params": [b], "lr": 0.0}], **kwargs)
        opt.add_param_group({"params": [c]})
        assert opt.param_groups[1]["lr"] == 0.0
        assert set(opt.param_groups[2]) == set(opt.param_groups[0])
        with pytest.raises(ValueError, match=r"`lr` must be >= 0. Received: lr=-1"):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -1})
        assert len(opt.param_groups) == 3          # the refused group is not kept
    a0 = a.detach().clone()

    def closure():
        opt.zero_grad()
        loss = loss_ab()  # c gets no gradient
        loss.backward()
        return loss
    opt.step(closure)
    assert c.grad is None and torch.equal(c, c0)
    assert not torch.equal(a, a0)
    if not CONFIG[name]["one_group"]:
        assert torch.equal(b, b0) and not opt.state[c]


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_rejects_bad_lr_and_unknown_keywords(name):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"^`lr` must be >= 0. Received: lr=-1$"):
        do.create(name, p, lr=-1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument"):
        do.create(name, p, bogus=3)


@pytest.mark.parametrize("name", NAMES)
def test_tensor_learning_rate_equals_float(name):
    kwargs = dict(CONFIG[name]["net"])
    lr = kwargs.pop("lr", OPTIMIZERS.get(name)([torch.nn.Parameter(torch.zeros(1))]).param_groups[0]["lr"])
    results = []
    for value in (lr, torch.tensor(float(lr), dtype=torch.float64)):
        model, loss_fn = net_problem()
        run_net(do.create(name, model.parameters(), lr=value, **kwargs), model, loss_fn, 4)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_the_trainer_drives_it(name):
    """What `descend compare` does: the Trainer calls step(closure) once per minibatch."""
    from descend.train import Trainer
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    kwargs = CONFIG[name].get("trainer", CONFIG[name]["net"])
    opt = do.create(name, model.parameters(), **kwargs)
    hist = Trainer(model, opt, batch_size=32, progress=False).fit((x, y), epochs=4)
    losses = hist.steps["loss"]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
