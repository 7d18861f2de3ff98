"""LARS and LAMB against their papers' algorithms and Optax's definitions, written out."""

import pytest
import torch

import descend.optim as do

DT = torch.float64


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    w = [torch.randn(s, generator=g, dtype=DT) for s in shapes]
    gs = [[torch.randn(s, generator=g, dtype=DT) for s in shapes] for _ in range(6)]
    return w, gs


def run(make, w0, gs):
    ps = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = make(ps)
    out = []
    for step_grads in gs:
        for p, g in zip(ps, step_grads):
            p.grad = g.clone()
        opt.step()
        out.append([p.detach().clone() for p in ps])
    return out


def included(w, mode):
    return mode == "none" or w.dim() > 1


def lars_paper(w0, gs, lr, m, wd, eta, exclude="bias_and_norm"):
    """You, Gitman & Ginsburg (2017), Algorithm 1: local lr = eta |w| / (|g| + beta |w|);
    v <- m v + lr * local_lr * (g + beta w); w <- w - v (excluded: v <- m v + lr g)."""
    w, v, out = [x.clone() for x in w0], [torch.zeros_like(x) for x in w0], []
    for step_grads in gs:
        for i, g in enumerate(step_grads):
            if included(w[i], exclude):
                local = eta * w[i].norm() / (g.norm() + wd * w[i].norm())
                v[i] = m * v[i] + lr * local * (g + wd * w[i])
            else:
                v[i] = m * v[i] + lr * g
            w[i] = w[i] - v[i]
        out.append([x.clone() for x in w])
    return out


def lars_optax(w0, gs, lr, m, wd, eta, eps=0.0):
    """optax.lars: add_decayed_weights(wd) -> scale_by_trust_ratio(eta, eps) ->
    scale_by_learning_rate(lr) -> trace(m); no masks (Optax's default)."""
    w, t, out = [x.clone() for x in w0], [torch.zeros_like(x) for x in w0], []
    for step_grads in gs:
        for i, g in enumerate(step_grads):
            u = g + wd * w[i]
            pn, un = w[i].norm(), u.norm()
            ratio = eta * pn / (un + eps) if pn > 0 and un > 0 else 1.0
            u = -lr * ratio * u
            t[i] = m * t[i] + u
            w[i] = w[i] + t[i]
        out.append([x.clone() for x in w])
    return out


def assert_paths(a, b):
    for xs, ys in zip(a, b):
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("exclude", ["bias_and_norm", "none"])
def test_lars_is_the_papers_algorithm(exclude):
    w0, gs = problem()
    kw = dict(lr=2.0, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    got = run(lambda p: do.LARS(p, **kw, weight_decay_exclude=exclude, trust_ratio_exclude=exclude), w0, gs)
    assert_paths(got, lars_paper(w0, gs, 2.0, 0.9, 0.01, 0.02, exclude))


def test_lars_equals_optax_without_weight_decay_and_differs_with_it():
    w0, gs = problem(1)
    kw = dict(lr=1.5, momentum=0.8, trust_coefficient=0.01, weight_decay_exclude="none",
              trust_ratio_exclude="none")
    got = run(lambda p: do.LARS(p, weight_decay=0.0, **kw), w0, gs)
    assert_paths(got, lars_optax(w0, gs, 1.5, 0.8, 0.0, 0.01))
    got = run(lambda p: do.LARS(p, weight_decay=0.1, **kw), w0, gs)
    theirs = lars_optax(w0, gs, 1.5, 0.8, 0.1, 0.01)
    assert not torch.allclose(got[-1][0], theirs[-1][0], rtol=1e-6)  # |g| + wd|w| vs |g + wd w|


def test_lars_nesterov_is_the_reformulated_step():
    """nesterov: step = m v + lr lambda u (v already updated), as Optax's trace(nesterov=True)."""
    w0, gs = problem(2)
    got = run(lambda p: do.LARS(p, lr=1.0, momentum=0.9, trust_coefficient=0.01, nesterov=True,
                                trust_ratio_exclude="none"), w0, gs)
    w, t = [x.clone() for x in w0], [torch.zeros_like(x) for x in w0]
    for k, step_grads in enumerate(gs):
        for i, g in enumerate(step_grads):
            u = -1.0 * 0.01 * w[i].norm() / g.norm() * g
            t[i] = 0.9 * t[i] + u
            w[i] = w[i] + 0.9 * t[i] + u
        for x, y in zip(got[k], w):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def lamb_paper(w0, gs, lr, b1, b2, eps, wd, exclude="bias_and_norm"):
    """You et al. (2019), Algorithm 2 with phi(z) = z (= Optax's lamb with masks):
    r = m^ / (sqrt(v^) + eps) + wd w; w <- w - lr |w| / |r| r (1 if a norm is 0)."""
    w = [x.clone() for x in w0]
    m = [torch.zeros_like(x) for x in w0]
    v = [torch.zeros_like(x) for x in w0]
    out = []
    for t, step_grads in enumerate(gs, start=1):
        for i, g in enumerate(step_grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            r = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            if included(w[i], exclude):
                r = r + wd * w[i]
                wn, rn = w[i].norm(), r.norm()
                ratio = wn / rn if wn > 0 and rn > 0 else 1.0
            else:
                ratio = 1.0
            w[i] = w[i] - lr * ratio * r
        out.append([x.clone() for x in w])
    return out


@pytest.mark.parametrize("exclude", ["bias_and_norm", "none"])
def test_lamb_is_the_papers_algorithm_and_optaxs(exclude):
    w0, gs = problem(3)
    got = run(lambda p: do.LAMB(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                weight_decay_exclude=exclude, trust_ratio_exclude=exclude), w0, gs)
    assert_paths(got, lamb_paper(w0, gs, 0.05, 0.8, 0.99, 1e-6, 0.1, exclude))


def test_zero_norms_give_a_ratio_of_one():
    w = torch.nn.Parameter(torch.zeros(2, 2, dtype=DT))
    opt = do.LARS([w], lr=0.5, momentum=0.0)
    w.grad = torch.ones(2, 2, dtype=DT)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.5, dtype=DT))


def test_arguments_are_checked():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match=r"^`trust_coefficient` must be > 0. Received: trust_coefficient=0$"):
        do.LARS(p, trust_coefficient=0)
    with pytest.raises(ValueError, match=r"^`trust_ratio_exclude` must be one of 'none', 'bias_and_norm'. "
                                         r"Received: trust_ratio_exclude='bias'$"):
        do.LAMB(p, trust_ratio_exclude="bias")
    with pytest.raises(TypeError, match=r"^`nesterov` must be a bool"):
        do.LARS(p, nesterov=1)
