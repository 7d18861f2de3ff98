"""Losses against the notes' formulas and torch: MSE, Huber / smooth L1, label smoothing, DisturbLabel."""

import math

import pytest
import torch
import torch.nn.functional as F

from descend.losses import LOSSES, disturb_labels, smoothed_targets


def data(n=16, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, dtype=torch.float64, generator=g), torch.randint(0, k, (n,), generator=g)


def test_registry():
    assert {"cross_entropy", "mse", "huber", "smooth_l1", "label_smoothing", "disturb_label"} <= set(LOSSES)


def test_mse_on_one_hot_targets():
    z, y = data()
    onehot = torch.zeros_like(z)
    onehot[torch.arange(len(y)), y] = 1.0
    torch.testing.assert_close(LOSSES.create("mse")(z, y), ((z - onehot) ** 2).mean())
    t = torch.randn_like(z)
    torch.testing.assert_close(LOSSES.create("mse")(z, t), F.mse_loss(z, t))
    with pytest.raises(ValueError, match="`targets` must be of the outputs' shape"):
        LOSSES.create("mse")(z, t[:, :2])


@pytest.mark.parametrize("name", ["huber", "smooth_l1"])
def test_huber_is_the_notes_formula(name):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).reshape(-1, 1)
    y = torch.zeros_like(z)
    d = (z - y).abs()
    notes = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()  # note 003
    torch.testing.assert_close(LOSSES.create(name)(z, y), notes)


def test_huber_and_smooth_l1_thresholds_match_torch():
    z, _ = data()
    t = torch.randn_like(z)
    torch.testing.assert_close(LOSSES.create("huber", delta=0.3)(z, t), F.huber_loss(z, t, delta=0.3))
    torch.testing.assert_close(LOSSES.create("smooth_l1", beta=0.3)(z, t), F.smooth_l1_loss(z, t, beta=0.3))
    with pytest.raises(ValueError, match="`delta` must be > 0"):
        LOSSES.create("huber", delta=0)


def test_label_smoothing_notes_target_and_loss():
    e, k = 0.2, 5
    q = smoothed_targets(torch.tensor([3]), k, e)
    torch.testing.assert_close(q, torch.tensor([[e / 4, e / 4, e / 4, 1 - e, e / 4]]))
    z, y = data(k=k)
    loss = LOSSES.create("label_smoothing", epsilon=e)(z, y)
    logp = z - torch.logsumexp(z, dim=1, keepdim=True)
    manual = torch.stack([-((1 - e) * logp[i, y[i]] + sum(e / (k - 1) * logp[i, j] for j in range(k) if j != y[i]))
                          for i in range(len(y))]).mean()
    torch.testing.assert_close(loss, manual)
    # the notes' e equals torch's label_smoothing = e K / (K-1)
    torch.testing.assert_close(loss, F.cross_entropy(z, y, label_smoothing=e * k / (k - 1)))


def test_label_smoothing_torch_style():
    z, y = data()
    torch.testing.assert_close(LOSSES.create("label_smoothing", epsilon=0.1, style="torch")(z, y),
                               F.cross_entropy(z, y, label_smoothing=0.1))
    torch.testing.assert_close(LOSSES.create("cross_entropy", label_smoothing=0.1)(z, y),
                               F.cross_entropy(z, y, label_smoothing=0.1))
    with pytest.raises(ValueError, match="`style` must be one of 'notes', 'torch'"):
        LOSSES.create("label_smoothing", style="keras")
    with pytest.raises(ValueError, match="`epsilon` must be >= 0 and <= 1"):
        LOSSES.create("label_smoothing", epsilon=1.5)


def test_disturb_labels_formula():
    alpha, c, n = 0.3, 10, 20_000
    t = torch.zeros(n, dtype=torch.long)
    out = disturb_labels(t, c, alpha, torch.Generator().manual_seed(0))
    # written out: u ~ U(0,1), r ~ U{0..C-1}; label = r if u < alpha else t (same draws)
    g = torch.Generator().manual_seed(0)
    u, r = torch.rand(n, generator=g), torch.randint(0, c, (n,), generator=g)
    assert torch.equal(out, torch.where(u < alpha, r, t))
    # distribution: P(true) = 1 - alpha + alpha / C, P(each other) = alpha / C
    freq = torch.bincount(out, minlength=c).double() / n
    p0 = 1 - alpha + alpha / c
    assert abs(freq[0].item() - p0) < 5 * math.sqrt(p0 * (1 - p0) / n)
    p = alpha / c
    assert (freq[1:] - p).abs().max().item() < 5 * math.sqrt(p * (1 - p) / n)


def test_disturb_label_module_train_only_and_seeded():
    z, y = data(n=64, k=10)
    z.requires_grad_(True)
    clean = F.cross_entropy(z, y)
    loss = LOSSES.create("disturb_label", alpha=0.5, seed=3)
    noisy = loss(z, y)
    assert not torch.allclose(noisy, clean)
    expect_labels = disturb_labels(y, 10, 0.5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy, F.cross_entropy(z, expect_labels))
    torch.testing.assert_close(LOSSES.create("disturb_label", alpha=0.5, seed=3)(z, y), noisy)  # reproducible
    with torch.no_grad():
        torch.testing.assert_close(loss(z, y), clean.detach())  # validation under no_grad: clean
    loss.eval()
    torch.testing.assert_close(loss(z, y), clean)
    torch.testing.assert_close(LOSSES.create("disturb_label", alpha=0.0)(z, y), clean)
    with pytest.raises(ValueError, match="`alpha` must be >= 0 and <= 1"):
        LOSSES.create("disturb_label", alpha=2)
    with pytest.raises(TypeError, match="disturb_label got unexpected keyword argument"):
        LOSSES.create("disturb_label", alpha=0.1, sigma=1)


def test_disturb_label_state_dict_carries_its_generator():
    from descend.losses import DisturbLabelLoss
    out = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = torch.zeros(64, dtype=torch.long)
    a = DisturbLabelLoss(alpha=0.5, seed=1)
    a(out, y)
    b = DisturbLabelLoss(alpha=0.5, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    fresh = DisturbLabelLoss(alpha=0.5, seed=1)  # its first draw, not the second
    assert torch.equal(a(out, y), b(out, y)) and not torch.equal(a(out, y), fresh(out, y))
