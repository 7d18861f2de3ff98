"""SAM: the ascent point w + rho g / |g| (adaptive: rho T^2 g / |T g|), the base step with
the gradient there, and the base optimizer's API (groups, schedulers, checkpoints)."""

import pytest
import torch

import descend.optim as do

DT = torch.float64


def f(ps):
    a, b = ps
    return (a ** 2).sum() * 0.5 + (a.sum() * b.sum()) ** 2 + torch.sin(b).sum()


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=DT)) for s in [(3, 2), (4,)]]


def grad_at(ws):
    ws = [w.detach().clone().requires_grad_(True) for w in ws]
    return list(torch.autograd.grad(f(ws), ws))


def recording_closure(opt, ps, seen):
    def closure():
        seen.append([p.detach().clone() for p in ps])
        opt.zero_grad()
        loss = f(ps)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("adaptive", [False, True])
def test_ascent_point_and_descent_step(adaptive):
    ps = params()
    w0 = [p.detach().clone() for p in ps]
    rho, lr = 0.05, 0.1
    opt = do.SAM(ps, base=torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)
    seen = []
    opt.step(recording_closure(opt, ps, seen))
    g = grad_at(w0)
    if adaptive:      # e = rho T^2 g / |T g|, T = |w|
        norm = torch.sqrt(sum(((w.abs() * gi) ** 2).sum() for w, gi in zip(w0, g)))
        e = [rho * w * w * gi / norm for w, gi in zip(w0, g)]
    else:             # e = rho g / |g| over all parameters
        norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
        e = [rho * gi / norm for gi in g]
    ascent = [w + ei for w, ei in zip(w0, e)]
    for x, y in zip(seen[1], ascent):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-14)
    g_sam = grad_at(ascent)
    for p, w, gs in zip(ps, w0, g_sam):
        torch.testing.assert_close(p.detach(), w - lr * gs, rtol=1e-12, atol=1e-14)
    assert len(seen) == 2 and torch.equal(seen[0][0], w0[0])


def test_base_by_name_equals_torch_base_with_momentum():
    a, b = params(), params()
    ours = do.SAM(a, base="momentum", rho=0.1, lr=0.05)              # descend's SGD, m=0.9
    ref = do.SAM(b, base=torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.9)
    for _ in range(5):
        ours.step(recording_closure(ours, a, []))
        ref.step(recording_closure(ref, b, []))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert "momentum_buffer" in ours.state[a[0]] and ours.state is ours.base_optimizer.state


def test_per_group_rho_uses_one_global_norm():
    ps = params(1)
    w0 = [p.detach().clone() for p in ps]
    opt = do.SAM([{"params": [ps[0]], "rho": 0.2}, {"params": [ps[1]]}], base="sgd", rho=0.05, lr=0.1)
    seen = []
    opt.step(recording_closure(opt, ps, seen))
    g = grad_at(w0)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    for x, w, gi, rho in zip(seen[1], w0, g, (0.2, 0.05)):
        torch.testing.assert_close(x, w + rho * gi / norm, rtol=1e-13, atol=1e-14)


def test_schedulers_groups_and_checkpoints_reach_the_base():
    ps = params(2)
    opt = do.SAM(ps, base="adam", rho=0.05, lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(recording_closure(opt, ps, []))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.005
    sd = opt.state_dict()
    assert sd["param_groups"][0]["rho"] == 0.05 and "exp_avg" in sd["state"][0]
    extra = torch.nn.Parameter(torch.zeros(2, dtype=DT))
    opt.add_param_group({"params": [extra], "rho": 0.5})
    assert opt.param_groups[-1]["rho"] == 0.5 and opt.param_groups[-1]["betas"] == (0.9, 0.999)
    assert opt.base_optimizer.param_groups is opt.param_groups


def test_errors():
    ps = params()
    with pytest.raises(ValueError, match=r"^`closure` must be given"):
        do.SAM(ps).step()
    with pytest.raises(ValueError, match=r"^`rho` must be >= 0. Received: rho=-0.1$"):
        do.SAM(ps, rho=-0.1)
    with pytest.raises(TypeError, match="not an optimizer instance"):
        do.SAM(ps, base=torch.optim.SGD(ps, lr=0.1))
    with pytest.raises(ValueError, match="Received: optimizer='adamm'"):
        do.SAM(ps, base="adamm")
    with pytest.raises(TypeError, match="SGD got unexpected keyword argument"):
        do.SAM(ps, base="sgd", colour="red")
