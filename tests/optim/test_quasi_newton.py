"""L-BFGS against torch.optim.LBFGS step for step; BFGS against its update formula and
its inverse-Hessian limit on a quadratic."""

import io
import math

import pytest
import torch

import descend.optim as do

DT = torch.float64


def rosenbrock(x):
    """The n-dimensional Rosenbrock function (non-convex)."""
    return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()


def start(n=6):
    return torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.3, 0.2][:n], dtype=DT)


def run(opt, w, f, steps):
    path = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = f(w)
            loss.backward()
            return loss
        opt.step(closure)
        path.append(w.detach().clone())
    return torch.stack(path)


@pytest.mark.parametrize("line_search_fn,lr", [(None, 2e-3), ("strong_wolfe", 1.0)])
@pytest.mark.parametrize("history_size,max_iter", [(3, 4), (10, 1), (100, 20)])
def test_lbfgs_equals_torch_step_for_step(line_search_fn, lr, history_size, max_iter):
    kw = dict(lr=lr, history_size=history_size, max_iter=max_iter, line_search_fn=line_search_fn)
    a, b = torch.nn.Parameter(start()), torch.nn.Parameter(start())
    ours = run(do.LBFGS([a], **kw), a, rosenbrock, 50)
    theirs = run(torch.optim.LBFGS([b], **kw), b, rosenbrock, 50)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert float(rosenbrock(ours[-1])) < float(rosenbrock(start()))


def test_lbfgs_state_dicts_interchange_with_torch():
    kw = dict(history_size=5, max_iter=3, line_search_fn="strong_wolfe")
    w_t, w_d = torch.nn.Parameter(start()), torch.nn.Parameter(start())
    ref = torch.optim.LBFGS([w_t], **kw)
    run(ref, w_t, rosenbrock, 4)
    w_d.data.copy_(w_t.detach())
    ours = do.LBFGS([w_d], lr=0.5, **kw)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    ours.load_state_dict(torch.load(buf, weights_only=False))
    assert ours.param_groups[0]["lr"] == 1
    torch.testing.assert_close(run(ours, w_d, rosenbrock, 6), run(ref, w_t, rosenbrock, 6),
                               rtol=1e-12, atol=1e-12)
    back = torch.optim.LBFGS([torch.nn.Parameter(w_d.detach().clone())], **kw)
    back.load_state_dict(ours.state_dict())
    assert set(back.state_dict()["state"][0]) == set(ref.state_dict()["state"][0])


def test_lbfgs_direction_is_the_two_loop_recursion_written_out():
    """d = -H g with H from the pairs (s_i, y_i): the two loops of Nocedal & Wright Alg. 7.4."""
    w = torch.nn.Parameter(start(4))
    opt = do.LBFGS([w], history_size=3, max_iter=1, line_search_fn="strong_wolfe")
    run(opt, w, rosenbrock, 6)
    st = opt.state[w]
    ys, ss = st["old_dirs"], st["old_stps"]
    g = torch.autograd.functional.jacobian(rosenbrock, w.detach())
    # next step's pair, then the recursion over the newest history_size pairs
    s_new, y_new = st["d"] * st["t"], g - st["prev_flat_grad"]
    pairs = list(zip(ss, ys)) + [(s_new, y_new)]
    pairs = pairs[-3:]
    q = -g
    alphas = []
    for s, y in reversed(pairs):
        a = (s @ q) / (y @ s)
        alphas.append(a)
        q = q - a * y
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), a in zip(pairs, reversed(alphas)):
        r = r + (a - (y @ r) / (y @ s)) * s
    run(opt, w, rosenbrock, 1)
    torch.testing.assert_close(opt.state[w]["d"], r, rtol=1e-12, atol=1e-14)


def test_lbfgs_arguments_are_checked():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"^`line_search_fn` must be one of None, 'strong_wolfe'. "
                                         r"Received: line_search_fn='wolfe'$"):
        do.LBFGS(p, line_search_fn="wolfe")
    with pytest.raises(ValueError, match=r"^`history_size` must be an integer >= 1. Received: history_size=0$"):
        do.LBFGS(p, history_size=0)
    with pytest.raises(ValueError, match="`closure` must be given"):
        do.LBFGS(p).step()
    with pytest.raises(TypeError, match="complex"):
        do.LBFGS([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex128))])


# ------------------------------------------------------------------ BFGS

def test_bfgs_inverse_hessian_converges_to_the_true_inverse_on_a_quadratic():
    """With (nearly) exact line searches, BFGS on 1/2 w^T A w - b^T w has H = A^-1 after n
    updates (quadratic termination); the n-th update happens at step n + 1."""
    n = 6
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    a = q @ torch.diag(torch.linspace(1.0, 8.0, n, dtype=DT)) @ q.T
    b = torch.randn(n, generator=g, dtype=DT)
    w = torch.nn.Parameter(torch.zeros(n, dtype=DT))
    opt = do.BFGS([w], max_iter=1, c1=1e-12, c2=1e-10, tolerance_grad=0.0, tolerance_change=0.0)
    errors = []
    for k in range(n + 1):
        run(opt, w, lambda w: 0.5 * w @ a @ w - b @ w, 1)
        h = opt.state[w].get("inverse_hessian")
        if h is not None:
            errors.append(float((h - torch.linalg.inv(a)).abs().max()))
    assert errors[-1] < 1e-8 and errors[0] > 1e-2
    torch.testing.assert_close(w.detach(), torch.linalg.solve(a, b), rtol=1e-9, atol=1e-10)


def test_bfgs_update_is_the_formula_written_out():
    """H_1 = (y.s / y.y) I, then H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T."""
    w = torch.nn.Parameter(start(4))
    opt = do.BFGS([w], max_iter=1)
    run(opt, w, rosenbrock, 1)
    h = None
    for _ in range(5):
        st = opt.state[w]
        g = torch.autograd.functional.jacobian(rosenbrock, w.detach())
        s, y = st["d"] * st["t"], g - st["prev_flat_grad"]
        rho = 1 / (y @ s)
        if h is None:
            h = (y @ s) / (y @ y) * torch.eye(4, dtype=DT)
        eye = torch.eye(4, dtype=DT)
        h = (eye - rho * torch.outer(s, y)) @ h @ (eye - rho * torch.outer(y, s)) + rho * torch.outer(s, s)
        run(opt, w, rosenbrock, 1)
        torch.testing.assert_close(opt.state[w]["inverse_hessian"], h, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.state[w]["d"], -h @ g, rtol=1e-10, atol=1e-12)


def test_bfgs_refuses_large_problems():
    with pytest.raises(ValueError, match=r"`params` must be at most max_params=4096 scalars for BFGS"):
        do.BFGS([torch.nn.Parameter(torch.zeros(65, 65))])
    with pytest.raises(ValueError, match=r"^`c2` must be > c1"):
        do.BFGS([torch.nn.Parameter(torch.zeros(2))], c1=0.5, c2=0.4)


def test_bfgs_and_lbfgs_reach_rosenbrocks_minimum():
    for opt_cls in (do.BFGS, do.LBFGS):
        w = torch.nn.Parameter(start())
        kw = {"line_search_fn": "strong_wolfe", "max_iter": 20}
        run(opt_cls([w], **kw), w, rosenbrock, 10)
        assert float((w.detach() - 1).abs().max()) < 1e-5, opt_cls.__name__
    assert math.isfinite(float(rosenbrock(w.detach())))
