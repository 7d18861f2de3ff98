import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descend.regularize import (
    FGSM, REGULARIZERS, InputNoise, L1Penalty, L2Penalty, LabelNoise, Tying, WeightNoise, fgsm,
    l1_penalty, l2_penalty, select_params, soft_threshold, tying_penalty,
)
from descend.callbacks import CALLBACKS


def loop(model, opt, loss_fn, callbacks, batches):
    """The trainer's hook order, written out: batch_begin, loss, backward, after_backward, step, batch_end."""
    t = SimpleNamespace(model=model, optimizer=opt, loss_fn=loss_fn, stop_training=False)
    for cb in callbacks:
        cb.on_fit_begin(t)
    for x, y in batches:
        for cb in callbacks:
            new = cb.on_batch_begin(t, (x, y))
            if new is not None:
                x, y = new
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        for cb in callbacks:
            loss = cb.on_loss(t, loss, (x, y))
        loss.backward()
        for cb in callbacks:
            cb.on_after_backward(t)
        opt.step()
        for cb in callbacks:
            cb.on_batch_end(t, {"loss": loss.detach()})
    return t


def test_registered_under_recipe_names():
    for name in ("l1_penalty", "l2_penalty", "tying", "input_noise", "weight_noise", "label_noise", "fgsm"):
        assert name in CALLBACKS and name in REGULARIZERS
        assert CALLBACKS.get(name) is REGULARIZERS.get(name)
    assert isinstance(CALLBACKS.create("l2_penalty", alpha=0.1), L2Penalty)


def test_select_params_excludes_bias_and_norm_by_default():
    m = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Linear(3, 1))
    assert [p is m[0].weight for p in select_params(m)] == [True, False]
    assert select_params(m)[1] is m[2].weight
    assert len(select_params(m, exclude=None)) == 6
    assert select_params(m, include="2.") == [m[2].weight, m[2].bias][:1]
    with pytest.raises(TypeError, match="`exclude` must be a string or a list of strings"):
        select_params(m, exclude=3)


def test_penalty_values_by_formula():
    w = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])]
    assert l2_penalty(w).item() == pytest.approx(0.5 * (1 + 4 + 9))
    assert l1_penalty(w).item() == pytest.approx(1 + 2 + 3)
    st = soft_threshold(torch.tensor([0.3, -0.3, 0.05, -1.0], dtype=torch.float64), 0.1)
    assert torch.allclose(st, torch.tensor([0.2, -0.2, 0.0, -0.9], dtype=torch.float64), rtol=1e-12)
    assert st[2].item() == 0.0


def test_l2_shrinks_weights_by_one_minus_lr_alpha_per_step():
    torch.manual_seed(0)
    m = nn.Linear(4, 1, bias=False).double()
    w0 = m.weight.detach().clone()
    e, a = 0.1, 0.3
    opt = torch.optim.SGD(m.parameters(), lr=e)
    zero_loss = lambda out, y: 0.0 * out.sum()  # noqa: E731  only the penalty acts
    batches = [(torch.randn(3, 4, dtype=torch.float64), None)] * 5
    loop(m, opt, zero_loss, [L2Penalty(alpha=a)], batches)
    assert torch.allclose(m.weight, (1 - e * a) ** 5 * w0, rtol=1e-12, atol=0)


def test_l2_trajectory_equals_torch_sgd_weight_decay():
    torch.manual_seed(1)
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    m1 = nn.Linear(5, 1, bias=False).double()
    m2 = nn.Linear(5, 1, bias=False).double()
    m2.load_state_dict(m1.state_dict())
    o1 = torch.optim.SGD(m1.parameters(), lr=0.05, momentum=0.9)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)] * 5
    loop(m1, o1, F.mse_loss, [L2Penalty(alpha=0.01)], batches)
    loop(m2, o2, F.mse_loss, [], batches)
    assert torch.allclose(m1.weight, m2.weight, rtol=1e-12, atol=1e-14)


def _sparse_regression(cb, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, d = 256, 30
    x = torch.randn(n, d, generator=g)
    w_true = torch.zeros(d)
    w_true[:3] = torch.tensor([2.0, -3.0, 1.5])
    y = (x @ w_true + 0.1 * torch.randn(n, generator=g)).unsqueeze(1)
    m = nn.Linear(d, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)] * 40
    loop(m, opt, F.mse_loss, [cb], batches)
    return m.weight.detach().flatten()


def test_l1_proximal_gives_exact_zeros_and_l2_none():
    w_l1 = _sparse_regression(L1Penalty(alpha=0.1, proximal=True))
    w_l2 = _sparse_regression(L2Penalty(alpha=0.1))
    zeros_l1 = int((w_l1 == 0).sum())
    assert zeros_l1 >= 20          # 27 irrelevant features; most are cut to exactly 0
    assert (w_l1[:3] != 0).all()   # the informative ones survive, shrunk
    assert int((w_l2 == 0).sum()) == 0


def test_l1_subgradient_adds_alpha_sign_w():
    m = nn.Linear(3, 1, bias=False).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    cb = L1Penalty(alpha=0.7)
    t = SimpleNamespace(model=m)
    loss = cb.on_loss(t, F.mse_loss(m(x), y), (x, y))
    (g,) = torch.autograd.grad(loss, m.weight)
    (gj,) = torch.autograd.grad(F.mse_loss(m(x), y), m.weight)
    assert torch.allclose(g, gj + 0.7 * m.weight.sign(), rtol=1e-12)


def test_tying_penalty_formula_and_pull():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    diff = torch.cat([(pa - pb).flatten() for pa, pb in zip(a.parameters(), b.parameters())])
    diff = diff.detach()
    assert tying_penalty(a, b).item() == pytest.approx(0.5 * float(diff @ diff), rel=1e-6)
    assert tying_penalty(a, b, squared=False).item() == pytest.approx(float(diff.norm()), rel=1e-6)
    with pytest.raises(ValueError, match="`b` must be parameters with the same shapes"):
        tying_penalty(a, nn.Linear(2, 2))
    # Only the penalty acts: gradient descent on alpha/2 ||A - B||^2 contracts the gap by (1 - 2 e alpha).
    model = nn.Sequential(a, nn.Identity(), b)  # only its parameters matter here
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    zero = lambda out, y: 0.0 * sum(p.sum() for p in model.parameters())  # noqa: E731
    cb = Tying(a="0", b="2", alpha=1.0)
    for _ in range(3):
        opt.zero_grad()
        cb.on_loss(SimpleNamespace(model=model), zero(None, None), None).backward()
        opt.step()
    a, b = model[0], model[2]
    new = torch.cat([(pa - pb).flatten() for pa, pb in zip(a.parameters(), b.parameters())]).detach()
    assert torch.allclose(new, (1 - 2 * 0.1) ** 3 * diff, atol=1e-6)
    with pytest.raises(ValueError, match="`a` must be a submodule of the model"):
        Tying(a="nope", b="2").on_loss(SimpleNamespace(model=model), torch.zeros(()), None)


def test_input_noise_statistics_and_seeding():
    x = torch.zeros(200, 100)
    xn, y = InputNoise(sigma=0.5, seed=3).on_batch_begin(None, (x, torch.zeros(200)))
    n = x.numel()
    assert abs(xn.mean().item()) < 5 * 0.5 / math.sqrt(n)
    # sample variance of n normals: relative sd sqrt(2/n)
    assert abs(xn.var().item() / 0.25 - 1) < 5 * math.sqrt(2 / n)
    xn2, _ = InputNoise(sigma=0.5, seed=3).on_batch_begin(None, (x, torch.zeros(200)))
    assert torch.equal(xn, xn2)


def test_weight_noise_gradient_at_noisy_point_step_from_clean_weights():
    torch.manual_seed(0)
    m = nn.Linear(3, 1).double()
    w0, b0 = m.weight.detach().clone(), m.bias.detach().clone()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    cb = WeightNoise(sigma=0.5, seed=7)
    loop(m, opt, F.mse_loss, [cb], [(x, y)])
    noise = 0.5 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    wn = (w0 + noise).requires_grad_(True)
    br = b0.clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(F.mse_loss(F.linear(x, wn, br), y), [wn, br])
    assert torch.allclose(m.weight, w0 - 0.1 * gw, rtol=1e-12)
    assert torch.allclose(m.bias, b0 - 0.1 * gb, rtol=1e-12)


def test_label_noise_disturbs_fraction_alpha_times_c_minus_1_over_c():
    n, c, alpha = 20000, 10, 0.3
    y = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(0))
    _, yn = LabelNoise(num_classes=c, alpha=alpha).on_batch_begin(None, (torch.zeros(n, 1), y))
    p = alpha * (c - 1) / c
    frac = (yn != y).float().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert yn.dtype == y.dtype and int(yn.min()) >= 0 and int(yn.max()) < c


def test_fgsm_has_max_norm_eps_and_raises_the_loss():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    x_adv = fgsm(m, F.cross_entropy, x, y, eps=0.1)
    assert (x_adv - x).abs().max().item() == pytest.approx(0.1, abs=1e-6)
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, 0.1), atol=1e-6)
    assert F.cross_entropy(m(x_adv), y) > F.cross_entropy(m(x), y)
    assert all(p.grad is None for p in m.parameters())
    # by formula: x + eps sign(grad_x J)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(m(xr), y), xr)
    assert torch.equal(x_adv, x + 0.1 * g.sign())


def test_fgsm_callback_mixes_clean_and_adversarial_loss():
    m = nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    t = SimpleNamespace(model=m, loss_fn=F.cross_entropy)
    clean = F.cross_entropy(m(x), y)
    mixed = FGSM(eps=0.2, alpha=0.25).on_loss(t, clean, (x, y))
    adv = F.cross_entropy(m(fgsm(m, F.cross_entropy, x, y, 0.2)), y)
    assert mixed.item() == pytest.approx((0.25 * clean + 0.75 * adv).item(), rel=1e-6)


@pytest.mark.parametrize("factory, kwargs, exc, msg", [
    (L2Penalty, {"alpha": -1}, ValueError, "`alpha` must be >= 0. Received: alpha=-1"),
    (L1Penalty, {"proximal": 1}, TypeError, "`proximal` must be a bool"),
    (LabelNoise, {"num_classes": 1}, ValueError, "`num_classes` must be an integer >= 2"),
    (LabelNoise, {"num_classes": 3, "alpha": 2}, ValueError, "`alpha` must be >= 0 and <= 1"),
    (FGSM, {"eps": -0.1}, ValueError, "`eps` must be >= 0"),
    (FGSM, {"clamp_min": 0.0}, ValueError, "`clamp_max` must be given together with clamp_min"),
    (InputNoise, {"sigma": float("nan")}, ValueError, "`sigma` must be finite"),
    (WeightNoise, {"sigma": 0.1, "bogus": 1}, TypeError, "bogus"),
])
def test_bad_arguments(factory, kwargs, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        factory(**kwargs)


def test_every_training_trick_is_reachable_from_a_recipe_callbacks_list():
    import descend.data  # noqa: F401  (registers augment)
    import descend.optim  # noqa: F401  (registers ema)
    recipe = [{"name": "early_stopping", "patience": 5}, {"name": "l2_penalty", "alpha": 1e-4},
              {"name": "l1_penalty", "alpha": 1e-4, "proximal": True}, {"name": "input_noise", "sigma": 0.1},
              {"name": "weight_noise", "sigma": 0.01}, {"name": "label_noise", "num_classes": 10},
              {"name": "fgsm", "eps": 0.05}, {"name": "tying", "a": "0", "b": "2"}, {"name": "ema"},
              {"name": "augment", "ops": ["hflip", {"name": "rotate", "degrees": 10}]}]
    for spec in recipe:
        kwargs = dict(spec)
        assert CALLBACKS.create(kwargs.pop("name"), **kwargs) is not None


@pytest.mark.parametrize("make", [lambda: InputNoise(sigma=0.1, seed=4), lambda: LabelNoise(5, alpha=0.5, seed=4),
                                  lambda: WeightNoise(sigma=0.1, seed=4)])
def test_noise_state_dict_resumes_the_same_draws(make):
    torch.manual_seed(0)
    model = nn.Linear(3, 5)
    t = SimpleNamespace(model=model)
    batch = (torch.randn(6, 3), torch.randint(0, 5, (6,)))

    def draw(cb):
        before = model.weight.detach().clone()
        out = cb.on_batch_begin(t, batch)
        noisy = model.weight.detach().clone()
        with torch.no_grad():
            model.weight.copy_(before)
        cb._clean = None
        return out if out is not None else (noisy,)

    a = make()
    draw(a)
    b = make()
    b.load_state_dict(a.state_dict())
    for x, y in zip(draw(a), draw(b)):
        assert torch.equal(x, y)
    assert make().state_dict() == {"generator": None, "device": None}
