"""Hessian-free against a dense solve of the damped Gauss-Newton system, and its
Levenberg-Marquardt rule written out."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import descend.optim as do

DT = torch.float64


def mlp_problem(loss="mse", seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(DT)
    x = torch.randn(20, 3, dtype=DT)
    y = torch.randn(20, 4, dtype=DT) if loss == "mse" else torch.randint(0, 4, (20,))
    fn = nn.functional.mse_loss if loss == "mse" else nn.functional.cross_entropy
    return model, x, y, fn


def dense_system(model, x, y, fn):
    """g, G = J^T H_L J (J = dz/dw of the outputs z, H_L = d2 L / dz2) and the loss."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(w):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = s.numel()
            out[n] = w[i:i + k].view(s)
            i += k
        return out

    def z_of(w):
        return functional_call(model, unflat(w), (x,)).reshape(-1)

    z0 = z_of(w0)
    jac = torch.autograd.functional.jacobian(z_of, w0)
    h_l = torch.autograd.functional.hessian(lambda z: fn(z.view(-1, 4), y), z0)
    g = torch.autograd.functional.jacobian(lambda w: fn(z_of(w).view(-1, 4), y), w0)
    return w0, g, jac.T @ h_l @ jac, lambda w: float(fn(z_of(w).view(-1, 4), y))


def closure_for(opt, model, x, y, fn):
    def closure():
        opt.zero_grad()
        loss = fn(model(x), y)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_cg_matches_a_dense_solve_of_the_damped_gauss_newton_system(loss):
    model, x, y, fn = mlp_problem(loss)
    w0, g, gn, _ = dense_system(model, x, y, fn)
    lam = 0.1
    want = -torch.linalg.solve(gn + lam * torch.eye(len(w0), dtype=DT), g)
    opt = do.HessianFree(model.parameters(), damping=lam, cg_max_iter=500, cg_tol=None,
                         adapt_damping=False)
    opt.step(closure_for(opt, model, x, y, fn))
    got = torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - w0
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(opt.state[next(model.parameters())]["direction"], want,
                               rtol=1e-7, atol=1e-9)


def test_levenberg_marquardt_rule_and_warm_start():
    """rho = (f(w + p) - f(w)) / (g.p + 1/2 p^T (G + lambda I) p); lambda * 3/2 when
    rho < 1/4, * 2/3 when rho > 3/4; the next CG starts from decay * p."""
    model, x, y, fn = mlp_problem("mse", seed=1)
    opt = do.HessianFree(model.parameters(), damping=1.0, cg_max_iter=3, cg_tol=None, cg_decay=0.5)
    closure = closure_for(opt, model, x, y, fn)
    lam = 1.0
    for _ in range(4):
        w0, g, gn, f = dense_system(model, x, y, fn)
        opt.step(closure)
        st = opt.state[next(model.parameters())]
        p = st["direction"]
        w1 = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
        torch.testing.assert_close(w1 - w0, p, rtol=1e-12, atol=1e-14)
        assert float(p.norm()) > 0
        q = g @ p + 0.5 * p @ (gn + lam * torch.eye(len(p), dtype=DT)) @ p
        rho = (f(w1) - f(w0)) / float(q)
        assert st["rho"] == pytest.approx(rho, rel=1e-8)
        lam = lam * 1.5 if rho < 0.25 else lam * 2 / 3 if rho > 0.75 else lam
        assert st["damping"] == pytest.approx(lam, rel=1e-12)
        assert st["cg_iterations"] <= 3


def test_a_step_that_raises_the_loss_is_undone():
    """rho < 0: w stays, lambda grows by 3/2 and the next CG starts from 0."""
    model, x, y, fn = mlp_problem("mse", seed=2)
    opt = do.HessianFree(model.parameters(), lr=50.0, damping=1e-3, cg_tol=None)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    opt.step(closure_for(opt, model, x, y, fn))
    st = opt.state[next(model.parameters())]
    assert st["rho"] < 0 and st["damping"] == pytest.approx(1.5e-3)
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), w0)
    assert float(st["direction"].abs().max()) == 0.0


def test_a_warm_start_worse_than_zero_is_dropped():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=DT))
    b = torch.ones(3, dtype=DT)
    bad = -10 * torch.linalg.solve(a, b)          # phi(bad) > 0
    res = do.conjugate_gradient(a, b, bad, max_iter=1, rtol=0.0)
    first = do.conjugate_gradient(a, b, max_iter=1, rtol=0.0)
    assert torch.equal(res.x, first.x)


def test_hessian_curvature_matches_a_dense_newton_solve():
    """curvature="hessian": CG on (H + lambda I) p = -g for any closure (no model call)."""
    a = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 3.0]], dtype=DT)
    f = lambda w: 0.5 * w @ a @ w + (w ** 4).sum() + w.sum()  # noqa: E731
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 0.2], dtype=DT))
    w0 = w.detach().clone()
    opt = do.HessianFree([w], curvature="hessian", damping=0.01, cg_tol=None, adapt_damping=False)

    def closure():
        opt.zero_grad()
        loss = f(w)
        loss.backward()
        return loss
    opt.step(closure)
    h = torch.autograd.functional.hessian(f, w0)
    g = torch.autograd.functional.jacobian(f, w0)
    torch.testing.assert_close(w.detach() - w0, -torch.linalg.solve(h + 0.01 * torch.eye(3, dtype=DT), g),
                               rtol=1e-9, atol=1e-11)
    assert w.grad.grad_fn is None


def test_gauss_newton_needs_exactly_one_model_call():
    model, x, y, fn = mlp_problem()
    opt = do.HessianFree(model.parameters())

    def twice():
        opt.zero_grad()
        loss = fn(model(x), y) + fn(model(2 * x), y)
        loss.backward()
        return loss
    with pytest.raises(ValueError, match=r"exactly once, for curvature='gauss_newton'.*"
                                         r"Received: closure='2 model calls'"):
        opt.step(twice)
    w = torch.nn.Parameter(torch.zeros(2, dtype=DT))
    opt = do.HessianFree([w])

    def no_model():
        opt.zero_grad()
        loss = ((w - 1) ** 2).sum()
        loss.backward()
        return loss
    with pytest.raises(ValueError, match="Received: closure='0 model calls'"):
        opt.step(no_model)
    with pytest.raises(ValueError, match=r"`curvature` must be one of 'gauss_newton', 'hessian'"):
        do.HessianFree([w], curvature="fisher")
    # a loss module called at the top level is not the model (it owns no parameters)
    opt = do.HessianFree(model.parameters(), adapt_damping=False)
    crit = nn.MSELoss()

    def with_module_loss():
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        return loss
    opt.step(with_module_loss)
