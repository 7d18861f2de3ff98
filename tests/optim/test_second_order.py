"""Newton's method, linear and nonlinear conjugate gradients, the strong Wolfe line search:
known answers in float64, formulas written out step by step."""

import math

import pytest
import torch

import descend.optim as do
from descend.optim.line_search import cubic_minimizer, strong_wolfe
from descend.optim.second_order import flat_hessian

DT = torch.float64


def spd(n, cond=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    return q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=DT)) @ q.T


def closure_for(opt, w, f):
    def closure():
        opt.zero_grad()
        loss = f(w)
        loss.backward()
        return loss
    return closure


# ------------------------------------------------------------------ Newton

def test_newton_reaches_the_minimum_of_a_convex_quadratic_in_one_step():
    a, b = spd(6, cond=100.0), torch.arange(6, dtype=DT) - 2.5
    w = torch.nn.Parameter(torch.randn(6, dtype=DT))
    opt = do.Newton([w])
    opt.step(closure_for(opt, w, lambda w: 0.5 * w @ a @ w - b @ w + 3.0))
    torch.testing.assert_close(w.detach(), torch.linalg.solve(a, b), rtol=1e-12, atol=1e-12)
    assert w.grad.grad_fn is None  # the graph of the gradient is not kept


def f_nonconvex(w):
    return (w[0] ** 2 - 1) ** 2 + w[0] * w[1] + 0.5 * w[1] ** 2 - torch.sin(w[2]) * w[0] + w[2] ** 4


@pytest.mark.parametrize("saddle_free", [False, True])
def test_newton_step_is_the_damped_formula(saddle_free):
    """w1 = w0 - lr (H + lambda I)^-1 g, H from torch.autograd.functional.hessian;
    saddle-free: |H| = Q |Lambda| Q^T."""
    w0 = torch.tensor([0.3, -0.2, 0.7], dtype=DT)
    g = torch.autograd.functional.jacobian(f_nonconvex, w0)
    h = torch.autograd.functional.hessian(f_nonconvex, w0)
    assert torch.linalg.eigvalsh(h).min() < 0   # indefinite here: the variants differ
    lr, lam = 0.7, 0.05
    if saddle_free:
        vals, vecs = torch.linalg.eigh(h)
        h = vecs @ torch.diag(vals.abs()) @ vecs.T
    want = w0 - lr * torch.linalg.solve(h + lam * torch.eye(3, dtype=DT), g)
    w = torch.nn.Parameter(w0.clone())
    opt = do.Newton([w], lr=lr, damping=lam, saddle_free=saddle_free)
    opt.step(closure_for(opt, w, f_nonconvex))
    torch.testing.assert_close(w.detach(), want, rtol=1e-12, atol=1e-13)


def test_saddle_free_newton_leaves_a_saddle_that_plain_newton_jumps_to():
    """f = x^2 - y^2, H = diag(2, -2): plain Newton w <- w - lr H^-1 g = (1 - lr) w goes to
    the saddle; saddle-free w <- w - lr |H|^-1 g = ((1 - lr) x, (1 + lr) y) leaves it."""
    f = lambda w: w[0] ** 2 - w[1] ** 2  # noqa: E731
    w0, lr, k = torch.tensor([0.5, 0.1], dtype=DT), 0.5, 8
    for sf, want in ((False, w0 * (1 - lr) ** k),
                     (True, torch.stack([w0[0] * (1 - lr) ** k, w0[1] * (1 + lr) ** k]))):
        w = torch.nn.Parameter(w0.clone())
        opt = do.Newton([w], saddle_free=sf, lr=lr)
        for _ in range(k):
            opt.step(closure_for(opt, w, f))
        torch.testing.assert_close(w.detach(), want, rtol=1e-12, atol=1e-14)


def test_newton_refuses_large_problems_and_needs_a_closure():
    with pytest.raises(ValueError, match=r"^`params` must be at most max_params=1000 scalars "
                                         r"for Newton's method .*Received: params='1001 scalars'$"):
        do.Newton([torch.nn.Parameter(torch.zeros(1001))])
    do.Newton([torch.nn.Parameter(torch.zeros(1001))], max_params=2000)
    opt = do.Newton([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="`closure` must be given"):
        opt.step()
    with pytest.raises(ValueError, match="`damping` must be >= 0. Received: damping=-1"):
        do.Newton([torch.nn.Parameter(torch.zeros(2))], damping=-1)


def test_flat_hessian_equals_torch_functional_hessian():
    w = torch.tensor([0.3, -0.2, 0.7], dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(f_nonconvex(w), [w], create_graph=True)
    torch.testing.assert_close(flat_hessian(g, [w]),
                               torch.autograd.functional.hessian(f_nonconvex, w.detach()),
                               rtol=1e-13, atol=1e-13)


def test_a_closure_that_asks_for_create_graph_itself_still_works():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=DT))
    opt = do.Newton([w])

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        torch.autograd.backward(loss, create_graph=True, inputs=[w])
        return loss
    opt.step(closure)
    torch.testing.assert_close(w.detach(), torch.zeros(2, dtype=DT))
    assert torch.autograd.backward.__module__ == "torch.autograd"  # restored


# ------------------------------------------------------------------ linear CG

@pytest.mark.parametrize("n,cond", [(2, 100.0), (5, 50.0), (12, 10.0), (30, 4.0)])
def test_linear_cg_solves_an_spd_system_in_at_most_n_steps(n, cond):
    a = spd(n, cond=cond, seed=n)
    b = torch.randn(n, dtype=DT, generator=torch.Generator().manual_seed(1))
    res = do.conjugate_gradient(a, b, rtol=0.0, max_iter=n)
    x = torch.linalg.solve(a, b)
    assert res.iterations == n
    assert float((res.x - x).norm()) <= 1e-10 * float(x.norm())
    # the same with a matrix-free operator; and it stops by itself once converged
    res2 = do.conjugate_gradient(lambda v: a @ v, b, rtol=0.0, max_iter=n)
    assert res2.iterations == res.iterations and torch.equal(res2.x, res.x)
    res3 = do.conjugate_gradient(a, b, rtol=1e-9)
    assert res3.reason == "converged" and res3.iterations <= n


def test_linear_cg_iterates_follow_the_textbook_recursion():
    """Hestenes-Stiefel written out: alpha = r.r / p.Ap; x += alpha p; r -= alpha Ap;
    p = r + (r_new.r_new / r.r) p."""
    a, b = spd(4, seed=3), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    seen = []
    do.conjugate_gradient(a, b, rtol=0.0, max_iter=3, callback=lambda i, x: seen.append(x.clone()))
    x, r = torch.zeros(4, dtype=DT), b.clone()
    p = r.clone()
    for k in range(3):
        alpha = (r @ r) / (p @ a @ p)
        x = x + alpha * p
        r_new = r - alpha * (a @ p)
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        torch.testing.assert_close(seen[k], x, rtol=1e-13, atol=1e-14)


def test_linear_cg_stops_at_negative_curvature():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=DT))
    res = do.conjugate_gradient(a, torch.tensor([1.0, 1.0], dtype=DT))
    assert res.reason == "negative_curvature"


def test_linear_cg_follows_martens_progress_rule():
    """Stop at the first i with phi_i < 0 and (phi_i - phi_{i-k}) / phi_i < k eps,
    k = max(10, i // 10), phi(x) = 1/2 x^T A x - b^T x (Martens 2010, section 4.4)."""
    a = spd(120, cond=1e7, seed=5)
    b = torch.randn(120, dtype=DT, generator=torch.Generator().manual_seed(2))
    xs = []
    do.conjugate_gradient(a, b, rtol=0.0, max_iter=120, callback=lambda i, x: xs.append(x.clone()))
    phi = [0.0] + [float(0.5 * x @ a @ x - b @ x) for x in xs]
    eps = 0.03
    want = next(i for i in range(1, 121)
                if i > max(10, i // 10) and phi[i] < 0
                and (phi[i] - phi[i - max(10, i // 10)]) / phi[i] < max(10, i // 10) * eps)
    res = do.conjugate_gradient(a, b, rtol=0.0, progress_tol=eps)
    assert res.reason == "progress" and res.iterations == want < 120


# ------------------------------------------------------------------ nonlinear CG

@pytest.mark.parametrize("beta", ["fletcher_reeves", "polak_ribiere"])
def test_nonlinear_cg_with_exact_line_searches_is_linear_cg(beta):
    """On 1/2 w^T A w - b^T w with (nearly) exact line searches both formulas give linear
    CG's iterates and reach the minimum in n steps."""
    n = 8
    a, b = spd(n, cond=20.0, seed=7), torch.linspace(-1, 1, n, dtype=DT)
    lin = []
    do.conjugate_gradient(a, b, rtol=0.0, max_iter=n, callback=lambda i, x: lin.append(x.clone()))
    w = torch.nn.Parameter(torch.zeros(n, dtype=DT))
    opt = do.NonlinearCG([w], max_iter=1, beta=beta, c1=1e-12, c2=1e-10, tolerance_grad=0.0,
                         tolerance_change=0.0)
    closure = closure_for(opt, w, lambda w: 0.5 * w @ a @ w - b @ w)
    for k in range(n):
        opt.step(closure)
        torch.testing.assert_close(w.detach(), lin[k], rtol=1e-8, atol=1e-10)
    assert float((w.detach() - torch.linalg.solve(a, b)).abs().max()) < 1e-10


def test_nonlinear_cg_directions_follow_the_formulas():
    """d_k = -g_k + beta_k d_{k-1}: FR g.g / g'.g', PR+ max(0, g.(g - g') / g'.g'), on
    Rosenbrock (the line search takes any step; the direction is checked)."""
    for beta in ("fletcher_reeves", "polak_ribiere"):
        w = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=DT))
        opt = do.NonlinearCG([w], max_iter=1, beta=beta, restart_every=100)
        f = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
        closure = closure_for(opt, w, f)
        opt.step(closure)
        for _ in range(6):
            st = opt.state[w]
            d_prev, g_prev = st["d"].clone(), st["prev_flat_grad"].clone()
            g = torch.autograd.functional.jacobian(f, w.detach())
            if beta == "fletcher_reeves":
                bk = (g @ g) / (g_prev @ g_prev)
            else:
                bk = torch.clamp((g @ (g - g_prev)) / (g_prev @ g_prev), min=0)
            want = -g + bk * d_prev
            if want @ g >= 0:
                want = -g
            opt.step(closure)
            torch.testing.assert_close(opt.state[w]["d"], want, rtol=1e-12, atol=1e-14)


def test_nonlinear_cg_restarts_every_n_steps():
    w = torch.nn.Parameter(torch.tensor([-1.2, 1.0, 0.5], dtype=DT))
    opt = do.NonlinearCG([w], max_iter=1, restart_every=2)
    f = lambda w: ((w - 1) ** 4).sum() + (w[0] * w[1]) ** 2  # noqa: E731
    closure = closure_for(opt, w, f)
    opt.step(closure)
    for k in range(4):
        opt.step(closure)
        if opt.state[w]["since_restart"] == 0:
            g = torch.autograd.functional.jacobian(f, (w.detach() - opt.state[w]["d"] * opt.state[w]["t"]))
            torch.testing.assert_close(opt.state[w]["d"], -g, rtol=1e-12, atol=1e-14)
    assert opt.state[w]["n_iter"] == 5


# ------------------------------------------------------------------ line search

def test_cubic_minimizer_is_exact_for_a_cubic_and_clamped():
    f = lambda x: x ** 3 - 3 * x  # noqa: E731  local minimum at 1
    fp = lambda x: 3 * x ** 2 - 3  # noqa: E731
    assert cubic_minimizer(0.0, f(0.0), fp(0.0), 2.0, f(2.0), fp(2.0)) == pytest.approx(1.0, abs=1e-12)
    assert cubic_minimizer(0.0, f(0.0), fp(0.0), 2.0, f(2.0), fp(2.0), bounds=(1.5, 3.0)) == 1.5


def test_strong_wolfe_conditions_hold_and_match_torch():
    f = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2  # noqa: E731
    import importlib
    torch_ls = getattr(importlib.import_module("torch.optim.lbfgs"), "_strong_wolfe", None)
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        x = torch.randn(2, generator=g, dtype=DT)
        grad = torch.autograd.functional.jacobian(f, x)
        d = -grad * torch.rand(2, generator=g, dtype=DT)
        gtd = grad @ d
        t0 = float(torch.rand(1, generator=g)) * 2

        def evaluate(t):
            return float(f(x + t * d)), torch.autograd.functional.jacobian(f, x + t * d)
        fn, gn, t, n = strong_wolfe(evaluate, t0, d, float(f(x)), grad, gtd, c1=1e-4, c2=0.9)
        if n < 25:
            assert fn <= float(f(x)) + 1e-4 * t * gtd
            assert abs(gn @ d) <= 0.9 * abs(gtd)
        if torch_ls is not None:
            want = torch_ls(lambda x_, t_, d_: evaluate(t_), x, t0, d, float(f(x)), grad, gtd)
            assert (fn, float(t), n) == (want[0], float(want[2]), want[3])
            assert torch.equal(gn, want[1])
