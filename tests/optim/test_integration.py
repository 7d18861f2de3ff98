"""descend.optim inside torch's machinery: LR schedulers, OneCycleLR momentum cycling,
ReduceLROnPlateau, GradScaler, gradient accumulation, devices."""

import pytest
import torch

import descend.optim as do
from optim_helpers import loss_fn, make_params, trajectory


def with_scheduler(make_opt, make_sched, metric=False):
    holder = {}

    def make(p):
        opt = make_opt(p)
        holder["s"] = make_sched(opt)
        return opt

    def on_step(opt, t):
        if metric:
            holder["s"].step(1.0)  # a plateau: the metric never improves
        else:
            holder["s"].step()
    traj = trajectory(make, steps=16, on_step=on_step)
    return traj, holder["s"]


SCHEDULES = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.05, total_steps=16,
        cycle_momentum="momentum" in o.defaults or "betas" in o.defaults),
}


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("Adam", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, amsgrad=True)),
    ("Adagrad", dict(lr=0.1)),
])
def test_schedulers_drive_the_same_trajectory_as_torch(name, kwargs, sched):
    """OneCycleLR cycles `momentum` (SGD, RMSprop) or `betas` (Adam) as well as lr."""
    ours, s1 = with_scheduler(lambda p: getattr(do, name)(p, **kwargs), SCHEDULES[sched])
    ref, s2 = with_scheduler(lambda p: getattr(torch.optim, name)(p, **kwargs), SCHEDULES[sched])
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    g = s1.optimizer.param_groups[0]
    if sched == "onecycle" and name != "Adagrad":
        key = "betas" if "betas" in g else "momentum"
        assert g[key] == s2.optimizer.param_groups[0][key]


def test_onecycle_really_changes_momentum_and_betas():
    p = make_params()
    for opt, key in [(do.SGD(p, lr=0.1, momentum=0.9), "momentum"), (do.Adam(p), "betas")]:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10,
                                                    base_momentum=0.8, max_momentum=0.95)
        seen = set()
        for _ in range(5):
            opt.zero_grad()
            loss_fn(p).backward()
            opt.step()
            sched.step()
            v = opt.param_groups[0][key]
            seen.add(v[0] if key == "betas" else v)
        assert len(seen) == 5 and min(seen) >= 0.8 - 1e-12


def test_reduce_lr_on_plateau():
    ours, s1 = with_scheduler(lambda p: do.SGD(p, lr=0.05, momentum=0.9),
                              lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=2),
                              metric=True)
    ref, s2 = with_scheduler(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                             lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=2),
                             metric=True)
    assert s1.optimizer.param_groups[0]["lr"] < 0.05
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "rmsprop_nesterov", "adagrad"])
def test_grad_scaler_skips_the_step_on_inf(name):
    params = make_params(torch.float32)
    opt = do.create(name, params, lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    before = [p.detach().clone() for p in params]
    opt.zero_grad()
    scaler.scale(loss_fn(params)).backward()
    params[0].grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert not any(opt.state[p] for p in params)
    assert scaler.get_scale() == 2.0 ** 7
    opt.zero_grad()
    scaler.scale(loss_fn(params)).backward()
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(before[0], params[0])
    # the unscaled gradient was used: same as a plain step without the scaler
    fresh = [torch.nn.Parameter(b.clone()) for b in before]
    ref = do.create(name, fresh, lr=0.01)
    loss_fn(fresh).backward()
    ref.step()
    for a, b in zip(params, fresh):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_the_full_batch_step():
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, dtype=torch.float64)

    def run(chunks):
        w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = do.Adam([w], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            for xc, yc in zip(x.chunk(chunks), y.chunk(chunks)):
                (((xc @ w - yc) ** 2).sum() / len(x)).backward()
            opt.step()
        return w.detach()
    torch.testing.assert_close(run(4), run(1), rtol=1e-12, atol=1e-14)


def test_model_training_with_module_parameters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    opt = do.AdamW(model.parameters(), lr=0.01)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "AdamW"])
def test_cuda_matches_cpu(name):
    kwargs = {"SGD": dict(lr=0.05, momentum=0.9)}.get(name, dict(lr=0.01))
    cpu = trajectory(lambda p: getattr(do, name)(p, **kwargs))
    params = [torch.nn.Parameter(p.detach().cuda()) for p in make_params()]
    opt = getattr(do, name)(params, **kwargs)
    for t in range(cpu.shape[0]):
        opt.zero_grad()
        loss_fn([p.cpu() for p in params], t).backward()
        opt.step()
    final = torch.cat([p.detach().cpu().reshape(-1) for p in params])
    torch.testing.assert_close(final, cpu[-1], rtol=1e-9, atol=1e-11)
