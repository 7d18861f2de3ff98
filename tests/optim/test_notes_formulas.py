"""Each method against its formula in the notes, written out step by step (float64)."""

import math

import pytest
import torch

import descend.optim as do
from optim_helpers import loss_fn, make_params, trajectory

STEPS = 12


def grad_at(ws, t):
    """Gradient of the shared test loss at the point ``ws`` (list of tensors)."""
    xs = [w.detach().clone().requires_grad_(True) for w in ws]
    loss_fn(xs, t).backward()
    return [x.grad for x in xs]


def flat(ws):
    return torch.cat([w.reshape(-1) for w in ws])


def written(update, steps=STEPS, lrs=None):
    """Run ``update(w, g, state, t, lr) -> w`` by hand on the shared problem."""
    w = [p.detach().clone() for p in make_params()]
    state, out = {}, []
    for t in range(steps):
        lr = None if lrs is None else lrs[t]
        w = update(w, state, t, lr)
        out.append(flat(w))
    return torch.stack(out)


def close(a, b):
    assert not torch.equal(a[0], a[-1])
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- gradient descent and momentum (notes 000, 001, 002) ---------------------------------

def test_sgd_is_theta_minus_eps_g():
    def upd(w, s, t, _):
        return [wi - 0.05 * gi for wi, gi in zip(w, grad_at(w, t))]
    close(trajectory(lambda p: do.SGD(p, lr=0.05)), written(upd))


def sgd_textbook(a, eps):
    def upd(w, s, t, lr):
        lr = eps if lr is None else lr
        g = grad_at(w, t)
        s["v"] = [a * v - lr * gi for v, gi in zip(s.get("v", [0 * x for x in w]), g)]
        return [wi + v for wi, v in zip(w, s["v"])]
    return upd


def test_textbook_momentum_v_gets_a_v_minus_eps_g():
    ours = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, momentum_form="textbook"))
    close(ours, written(sgd_textbook(0.9, 0.05)))


def nesterov_lookahead_written(a, eps):
    """Algorithm 3 of note 001: gradient at the interim point theta + a v."""
    def upd(w, s, t, _):
        v = s.get("v", [0 * x for x in w])
        g = grad_at([wi + a * vi for wi, vi in zip(w, v)], t)
        s["v"] = [a * vi - eps * gi for vi, gi in zip(v, g)]
        return [wi + vi for wi, vi in zip(w, s["v"])]
    return upd


@pytest.mark.parametrize("form", ["textbook", "torch"])
def test_lookahead_nesterov_is_algorithm_3(form):
    ours = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, nesterov=True, lookahead=True,
                                       momentum_form=form), closure=True)
    close(ours, written(nesterov_lookahead_written(0.9, 0.05)))


@pytest.mark.parametrize("form", ["textbook", "torch"])
def test_the_two_nesterov_forms_give_the_same_trajectory(form):
    """The reformulated update stores phi = theta + a v: it visits the look-ahead points."""
    a, lr = 0.9, 0.05
    looks = []

    def record(opt, t):
        out = []
        for p in opt.param_groups[0]["params"]:
            st = opt.state[p]
            v = st["velocity"] if form == "textbook" else -lr * st["momentum_buffer"]
            out.append((p + a * v).detach().reshape(-1))
        looks.append(torch.cat(out))
    trajectory(lambda p: do.SGD(p, lr=lr, momentum=a, nesterov=True, lookahead=True,
                                momentum_form=form), closure=True, on_step=record)
    reformulated = trajectory(lambda p: do.SGD(p, lr=lr, momentum=a, nesterov=True,
                                               momentum_form=form))
    close(reformulated, torch.stack(looks))


def test_lookahead_needs_a_closure():
    p = make_params()
    opt = do.create("nesterov_lookahead", p, lr=0.1)
    loss_fn(p).backward()
    with pytest.raises(ValueError, match="`closure` must be given when lookahead=True"):
        opt.step()


def test_momentum_forms_agree_at_constant_lr_and_differ_under_a_schedule():
    torch_form = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9))
    textbook = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, momentum_form="textbook"))
    close(torch_form, textbook)

    def scheduled(form):
        holder = {}

        def make(p):
            opt = do.SGD(p, lr=0.05, momentum=0.9, momentum_form=form)
            holder["s"] = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.1)
            return opt
        return trajectory(make, on_step=lambda o, t: holder["s"].step())
    a, b = scheduled("torch"), scheduled("textbook")
    assert torch.equal(a[:4], b[:4]) or torch.allclose(a[:4], b[:4], rtol=1e-12)
    assert (a[4:] - b[4:]).abs().max() > 1e-3  # textbook velocity keeps the old lr inside
    lrs = [0.05 * 0.1 ** (t // 4) for t in range(STEPS)]
    close(b, written(sgd_textbook(0.9, None), lrs=lrs))
    torch_written = []  # b <- a b + g;  w <- w - lr_t b

    def upd(w, s, t, lr):
        g = grad_at(w, t)
        s["b"] = [0.9 * bi + gi for bi, gi in zip(s.get("b", [0 * x for x in w]), g)]
        return [wi - lr * bi for wi, bi in zip(w, s["b"])]
    close(a, written(upd, lrs=lrs))


# -- adaptive methods (notes 000, 001, 003) ------------------------------------------------

def test_adagrad_algorithm_8_4():
    def upd(w, s, t, _):
        g = grad_at(w, t)
        s["r"] = [r + gi * gi for r, gi in zip(s.get("r", [0 * x for x in w]), g)]
        return [wi - 0.1 / (1e-7 + r.sqrt()) * gi for wi, r, gi in zip(w, s["r"], g)]
    close(trajectory(lambda p: do.Adagrad(p, lr=0.1, eps=1e-7)), written(upd))


def rmsprop_written(rho, eps, delta):
    """Algorithm 8.5: delta inside the square root."""
    def upd(w, s, t, _):
        g = grad_at(w, t)
        s["r"] = [rho * r + (1 - rho) * gi * gi for r, gi in zip(s.get("r", [0 * x for x in w]), g)]
        return [wi - eps / (delta + r).sqrt() * gi for wi, r, gi in zip(w, s["r"], g)]
    return upd


def test_rmsprop_algorithm_8_5_with_delta_inside_the_root():
    ours = trajectory(lambda p: do.RMSprop(p, lr=0.01, alpha=0.9, eps=0.0, eps_root=1e-6))
    close(ours, written(rmsprop_written(0.9, 0.01, 1e-6)))
    torch_like = trajectory(lambda p: do.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6))
    assert (torch_like - ours).abs().max() > 1e-6  # the two places of delta differ


def rmsprop_nesterov_written(rho, a, eps, delta):
    """Algorithm 8.6 (with delta inside the root to avoid 0/0)."""
    def upd(w, s, t, _):
        v = s.get("v", [0 * x for x in w])
        g = grad_at([wi + a * vi for wi, vi in zip(w, v)], t)
        s["r"] = [rho * r + (1 - rho) * gi * gi for r, gi in zip(s.get("r", [0 * x for x in w]), g)]
        s["v"] = [a * vi - eps / (delta + r).sqrt() * gi for vi, r, gi in zip(v, s["r"], g)]
        return [wi + vi for wi, vi in zip(w, s["v"])]
    return upd


def test_rmsprop_nesterov_algorithm_8_6_lookahead_and_reformulated():
    kw = dict(lr=0.01, alpha=0.9, momentum=0.8)
    ref = written(rmsprop_nesterov_written(0.9, 0.8, 0.01, 1e-6))
    looks = []

    def record(opt, t):
        looks.append(torch.cat([(p + 0.8 * opt.state[p]["velocity"]).detach().reshape(-1)
                                for p in opt.param_groups[0]["params"]]))
    ours = trajectory(lambda p: do.create("rmsprop_nesterov", p, lookahead=True, **kw),
                      closure=True, on_step=record)
    close(ours, ref)
    reformulated = trajectory(lambda p: do.create("rmsprop_nesterov", p, **kw))
    close(reformulated, torch.stack(looks))
    # torch's momentum form (b <- m b + g / sqrt(r)) gives the same at constant lr
    torch_form = trajectory(lambda p: do.RMSprop(p, nesterov=True, eps=0.0, eps_root=1e-6, **kw))
    close(torch_form, reformulated)


def adam_written(r1, r2, eps, delta, eps_root=0.0):
    def upd(w, s, t, _):
        g = grad_at(w, t)
        k = t + 1
        s["s"] = [r1 * a + (1 - r1) * gi for a, gi in zip(s.get("s", [0 * x for x in w]), g)]
        s["r"] = [r2 * r + (1 - r2) * gi * gi for r, gi in zip(s.get("r", [0 * x for x in w]), g)]
        sh = [a / (1 - r1 ** k) for a in s["s"]]
        rh = [r / (1 - r2 ** k) for r in s["r"]]
        return [wi - eps * a / ((r + eps_root).sqrt() + delta) for wi, a, r in zip(w, sh, rh)]
    return upd


def test_adam_algorithm_8_7():
    close(trajectory(lambda p: do.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
          written(adam_written(0.8, 0.99, 0.05, 1e-6)))


def test_adam_with_eps_inside_the_root():
    ours = trajectory(lambda p: do.Adam(p, lr=0.05, eps=1e-8, eps_root=1e-4))
    close(ours, written(adam_written(0.9, 0.999, 0.05, 1e-8, eps_root=1e-4)))


def test_adadelta_zeiler():
    def upd(w, s, t, _):
        g = grad_at(w, t)
        rho, e = 0.9, 1e-6
        s["r"] = [rho * r + (1 - rho) * gi * gi for r, gi in zip(s.get("r", [0 * x for x in w]), g)]
        a = s.get("a", [0 * x for x in w])
        d = [((ai + e).sqrt() / (r + e).sqrt()) * gi for ai, r, gi in zip(a, s["r"], g)]
        s["a"] = [rho * ai + (1 - rho) * di * di for ai, di in zip(a, d)]
        return [wi - di for wi, di in zip(w, d)]
    close(trajectory(lambda p: do.Adadelta(p)), written(upd))


# -- weight decay and L1 (note 001) ----------------------------------------------------------

def test_coupled_l2_and_decoupled_decay_for_sgd():
    def coupled(w, s, t, _):  # w <- w - eps (a w + grad J)
        return [wi - 0.05 * (0.1 * wi + gi) for wi, gi in zip(w, grad_at(w, t))]

    def decoupled(w, s, t, _):  # w <- (1 - eps a) w - eps grad J, the same for plain SGD
        return [(1 - 0.05 * 0.1) * wi - 0.05 * gi for wi, gi in zip(w, grad_at(w, t))]
    close(trajectory(lambda p: do.SGD(p, lr=0.05, weight_decay=0.1)), written(coupled))
    close(trajectory(lambda p: do.SGD(p, lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
          written(decoupled))
    # with momentum they differ: the coupled term enters the velocity
    a = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1))
    b = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1,
                                    decoupled_weight_decay=True))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_weight_decay_can_exclude_biases_and_norm_parameters(name):
    cls = getattr(do, name)
    excluded = trajectory(lambda p: cls(p, lr=0.05, weight_decay=0.5,
                                        weight_decay_exclude="bias_and_norm"))
    grouped = trajectory(lambda p: cls([{"params": p[:1]}, {"params": p[1:], "weight_decay": 0.0}],
                                       lr=0.05, weight_decay=0.5))
    everything = trajectory(lambda p: cls(p, lr=0.05, weight_decay=0.5))
    close(excluded, grouped)
    assert (excluded - everything).abs().max() > 1e-4
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    groups = do.decay_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert all(p.dim() == 2 for p in groups[0]["params"])


def test_l1_by_subgradient():
    def upd(w, s, t, _):  # grad J~ = a sign(w) + grad J
        return [wi - 0.05 * (0.2 * torch.sign(wi) + gi) for wi, gi in zip(w, grad_at(w, t))]
    close(trajectory(lambda p: do.SGD(p, lr=0.05, l1=0.2)), written(upd))


def test_l1_proximal_soft_threshold():
    def upd(w, s, t, _):  # w_i = sign(w+_i) max(|w+_i| - eps a, 0)
        wp = [wi - 0.05 * gi for wi, gi in zip(w, grad_at(w, t))]
        return [torch.sign(x) * torch.clamp(x.abs() - 0.05 * 0.2, min=0) for x in wp]
    close(trajectory(lambda p: do.SGD(p, lr=0.05, l1=0.2, l1_mode="proximal")), written(upd))


def test_l1_proximal_gives_exact_zeros_and_subgradient_does_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 20, generator=g, dtype=torch.float64)
    w_true = torch.zeros(20, dtype=torch.float64)
    w_true[:3] = torch.tensor([2.0, -1.5, 1.0], dtype=torch.float64)
    y = x @ w_true + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)

    def fit(mode):
        w = torch.nn.Parameter(torch.zeros(20, dtype=torch.float64) + 0.3)
        opt = do.SGD([w], lr=0.1, l1=0.1, l1_mode=mode)
        for _ in range(300):
            opt.zero_grad()
            (0.5 * ((x @ w - y) ** 2).mean()).backward()
            opt.step()
        return w.detach()
    prox, sub = fit("proximal"), fit("subgradient")
    assert (prox[3:] == 0).all() and (prox[:3] != 0).all()
    assert (sub == 0).sum() == 0
    assert sub[3:].abs().max() < 0.05  # subgradient hovers near 0 without reaching it


# -- gradient clipping and noise (notes 003) ----------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_by_global_norm_equals_torch(norm_type):
    def torch_run(p):
        class Clipped(torch.optim.SGD):
            def step(self, closure=None):
                torch.nn.utils.clip_grad_norm_(p, 0.5, norm_type=norm_type)
                return super().step(closure)
        return Clipped(p, lr=0.05, momentum=0.9)
    ours = trajectory(lambda p: do.SGD(p, lr=0.05, momentum=0.9, clip_norm=0.5,
                                       clip_norm_type=norm_type))
    close(ours, trajectory(torch_run))


def test_clip_by_value_equals_torch():
    def torch_run(p):
        class Clipped(torch.optim.Adam):
            def step(self, closure=None):
                torch.nn.utils.clip_grad_value_(p, 0.3)
                return super().step(closure)
        return Clipped(p, lr=0.05)
    close(trajectory(lambda p: do.Adam(p, lr=0.05, clip_value=0.3)), trajectory(torch_run))


def test_annealed_gradient_noise_variance():
    """sigma_t^2 = eta / (1 + t)^gamma; the sample variance of n draws has standard
    deviation sigma^2 sqrt(2 / (n - 1)); the bound is 5 of those (and 5 sigma/sqrt(n)
    for the mean)."""
    eta, gamma, n = 0.3, 0.55, 40_000
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
    opt = do.SGD([w], lr=1.0, grad_noise=eta, grad_noise_gamma=gamma)
    for t in range(6):
        before = w.detach().clone()
        w.grad = torch.zeros_like(w)
        opt.step()
        noise = before - w.detach()
        var = eta / (1 + t) ** gamma
        assert abs(noise.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))
        assert abs(noise.mean().item()) < 5 * math.sqrt(var / n)
    assert opt.state[w]["step"].item() == 6
